#!/usr/bin/env bash
# Issue 18's GPU numbers, for a lease of a GPU machine (15 minutes of device time in all, 10 per call).
# Prepare once, here: `bash benchmarks/gpu_prepare.sh` (wheels in .whl/, data in .gpudata/, size check).
# Then two calls of the device tool, back to back (the machine stays warm 30 s), each carrying .whl and .gpudata:
#
#   STEPS="graphs cortex pbmc4k" bash benchmarks/gpu_session.sh    # timeout_s 560; about 6.5 minutes
#   STEPS="peer scale" bash benchmarks/gpu_session.sh              # timeout_s 450; about 5 minutes
#
# Steps (each under a hard limit; one that fails is logged and the next one runs):
#   graphs  the CUDA-graph tests (pytest -m cuda), then eager against graphed epochs (gpu_graphs.py)
#   cortex  100 trials of the default space on Cortex with the default slots (gpus="all",
#           trials_per_gpu="auto"), unpruned, stopped after SEARCH_SECONDS (default 90): trials per hour,
#           projected time of 100 trials (target 5 minutes)
#   pbmc4k  the same on PBMC4k (target 15 minutes)
#   peer    our model against scvi-tools on the GPU, Cortex and PBMC4k (target 10x per steady epoch)
#   scale   one trial on 1M cells x 720 genes on the GPU: seconds per epoch (target 10 s), peak GPU memory
# Every call first installs the wheels and checks the package on the GPU (3 epochs of Cortex).
#
# REHEARSE=1 runs the same steps here on the CPU, small (in a Python 3.12 environment like the image's,
# to check the wheels and the commands before a lease); graphs needs a GPU and is left out.
#
# Results: $OUT/log.txt and $OUT/results.tgz (the results/ files the steps wrote, this call's and any
# earlier call's on the same machine). Unpack here with `tar xzf results.tgz -C /tmp` and copy into
# benchmarks/results/ what is new.
set -u
OUT=${OUT:-/tmp/sat-gpu}
STEPS=${STEPS:-graphs cortex pbmc4k peer scale}
SEARCH_SECONDS=${SEARCH_SECONDS:-90}
RESULTS=/tmp/sat-results  # outside $OUT: only the log and one archive come back
DEVICE=cuda CELLS=1000000
SEARCH_ARGS=""
[ "${REHEARSE:-0}" = 1 ] && { DEVICE=cpu CELLS=20000 SEARCH_SECONDS=20 SEARCH_ARGS="--max-epochs 5"; }
mkdir -p "$OUT" "$RESULTS"
export STEPS DEVICE PYTHONUNBUFFERED=1 SAT_DATA="$PWD/.gpudata" SAT_RESULTS="$RESULTS"
LOG="$OUT/log.txt"

step() {  # step SECONDS command...: run with a hard limit, log everything, never stop the session
    local limit=$1
    shift
    echo "=== $(date +%T) [$limit s] $*" | tee -a "$LOG"
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}
pack() { tar czf "$OUT/results.tgz" -C "$RESULTS" .; }
wants() { [[ " $STEPS " == *" $1 "* ]]; }

echo "=== $(date +%T) steps: $STEPS" | tee -a "$LOG"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv | tee -a "$LOG"
nproc | tee -a "$LOG"

# Fail fast (and cheaply) when the environment is wrong: the package and a few epochs on the GPU.
step 60 python3 - <<'EOF'
import os
import anndata as ad, hyperopt, torch
import scanpy_autotune as sat
device = os.environ["DEVICE"]
assert device == "cpu" or torch.cuda.is_available(), "no GPU visible"
peer = ""
if "peer" in os.environ["STEPS"].split():  # only the peer step needs scvi-tools (its import takes a while)
    try:
        import scvi
        peer = f"scvi {scvi.__version__}"
    except Exception as error:
        peer = f"scvi-tools does not import: {error!r}"
adata = ad.read_h5ad(".gpudata/cortex_zeisel_3005x200.h5ad")
model = sat.Model.fit(adata, max_epochs=3, device=device, seed=0)
print("torch", torch.__version__, "anndata", ad.__version__, "hyperopt", hyperopt.__version__, peer,
      "device", model.device, "NLL after 3 epochs", model.marginal_nll(adata, n_mc=10, cells="heldout"))
EOF
grep -q "NLL after 3 epochs" "$LOG" || { echo "sanity check failed" | tee -a "$LOG"; pack; exit 1; }

if wants graphs && [ "$DEVICE" = cuda ]; then
    step 60 python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda_graphs.py
    step 90 python3 benchmarks/gpu_graphs.py --epochs 40
    pack
fi

for dataset in cortex pbmc4k; do
    wants $dataset || continue
    file=$([ $dataset = cortex ] && echo cortex_zeisel_3005x200 || echo pbmc4k_10x_4271x2000)
    step $(( SEARCH_SECONDS + 60 )) python3 benchmarks/search.py run --dataset "$file" --gpus all \
        --trials-per-gpu auto --pruner none --patience none --max-evals 100 --timeout "$SEARCH_SECONDS" $SEARCH_ARGS
    pack
done

if wants peer; then
    step 200 python3 benchmarks/peer_scvi.py --scvi-python python3 --device $DEVICE --epochs 20 --n-mc 20 \
        --datasets cortex_zeisel_3005x200.h5ad pbmc4k_10x_4271x2000.h5ad --out peer_scvi_gpu_graphs
    pack
fi

if wants scale; then
    step 150 python3 benchmarks/scale.py --cells $CELLS --genes 720 --epochs 3 --device $DEVICE
    pack
fi
echo "=== done $(date +%T)" | tee -a "$LOG"
