#!/usr/bin/env bash
# One lease of a GPU machine, the GPU numbers in one command (about 9 minutes; 11.5 at most):
#   0. the CUDA-graph tests (pytest -m cuda) and eager against graphed epochs (gpu_graphs.py),
#   1. our model against scvi-tools on the GPU (peer_scvi.py --device cuda),
#   2. 20-trial searches of the default space on the three study datasets (the study's Table 1 on a GPU),
#      4 trials at a time, each stopped after SEARCH_SECONDS (default 80) with what finished,
#   3. with TABLE5=1 (about 2 minutes more): tuned against default on those searches (Table 5; imputation
#      without retraining).
# Measured on an H200: a default-space Cortex trial takes about 45 s with 4 running at once.
#
# The machine has torch but not anndata, hyperopt or scvi-tools: they travel as wheels in .whl/
# (python 3.12 manylinux, see benchmarks/README.md), the data in .gpudata/. From the repo root there:
#   OUT=/some/dir bash benchmarks/gpu_session.sh
# Results: $OUT/log.txt and $OUT/results.tgz (the results/ tree the scripts wrote).
set -u
OUT=${OUT:-/tmp/sat-gpu}
mkdir -p "$OUT/results"
export PYTHONUNBUFFERED=1 SAT_DATA="$PWD/.gpudata" SAT_RESULTS="$OUT/results"
LOG="$OUT/log.txt"

step() {  # step SECONDS command...: run with a hard limit, log everything, never stop the session
    local limit=$1
    shift
    echo "=== $(date +%T) [$limit s] $*" | tee -a "$LOG"
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}
pack() { tar czf "$OUT/results.tgz" -C "$OUT" results; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"

# Fail fast (and cheaply) when the environment is wrong: imports, and a few epochs on the GPU.
step 60 python3 - <<'EOF'
import anndata as ad, hyperopt, scvi, torch
import scanpy_autotune as sat
assert torch.cuda.is_available(), "no GPU visible"
adata = ad.read_h5ad(".gpudata/cortex_zeisel_3005x200.h5ad")
model = sat.Model.fit(adata, max_epochs=3, device="cuda", seed=0)
print("torch", torch.__version__, "scvi", scvi.__version__, "hyperopt", hyperopt.__version__,
      "device", model.device, "NLL after 3 epochs", model.marginal_nll(adata, n_mc=10, cells="heldout"))
EOF
grep -q "NLL after 3 epochs" "$LOG" || { echo "sanity check failed" | tee -a "$LOG"; pack; exit 1; }

# CUDA graphs (issue 18): the tests that need a GPU, then eager against graphed epochs.
step 90 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda_graphs.py
step 90 python3 benchmarks/gpu_graphs.py --epochs 40
pack

step 150 python3 benchmarks/peer_scvi.py --scvi-python python3 --device cuda --epochs 30 --n-mc 100 \
    --out peer_scvi_gpu
pack

DATASETS="cortex_zeisel_3005x200 pbmc4k_10x_4271x2000 cbmc_citeseq_8617x2000"
for dataset in $DATASETS; do
    step $(( ${SEARCH_SECONDS:-80} + 40 )) python3 benchmarks/search.py run --dataset "$dataset" --gpus 1 --trials-per-gpu 4 --max-evals 20 \
        --test-size 0.1 --timeout "${SEARCH_SECONDS:-80}"
    pack
done

[ "${TABLE5:-0}" = 1 ] || { echo "=== done $(date +%T)" | tee -a "$LOG"; exit 0; }
# Table 5 for the three searches at once (its timings are not reported, so they may share the GPU).
for dataset in $DATASETS; do
    timeout -k 5 110 python3 benchmarks/tuned_vs_default.py "${dataset}_w4_none_n20_s0_t0.1_gpu" --seeds 3 \
        --no-retrain --device cuda --out "tuned_vs_default_gpu_${dataset%%_*}" >"$OUT/results/tvd_${dataset%%_*}.log" 2>&1 &
done
wait
cat "$OUT"/results/tvd_*.log >>"$LOG"
pack
echo "=== done $(date +%T)" | tee -a "$LOG"
