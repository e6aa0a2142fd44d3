#!/usr/bin/env bash
# Prepare a GPU lease (run here, from the repo root, where pip reaches a registry): the wheels the GPU
# image lacks in .whl/, the data in .gpudata/, both ignored by git, and a check that the working tree
# plus both fit what a device call carries (64 MiB). Then run benchmarks/gpu_session.sh there.
#
# The image ('cuda': Python 3.12, torch 2.11, pandas 3, numpy, scipy, h5py, numba, scikit-learn,
# matplotlib, lightning, pytest) lacks anndata, hyperopt, scanpy and scvi-tools; pandas 2 travels
# too: anndata 0.12 with pandas 3 failed to write .h5ad files there ("allow_write_nullable_strings").
# The versions are those CI tests with (numcodecs 0.17: a 1.4 MB wheel against 9 MB for 0.16, to fit the
# 64 MiB); every wheel's requirements are checked against the image (_gpu_wheel_check.py).
set -eu
cd "$(git rev-parse --show-toplevel)"
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
grep -qx "/.gpudata/" .git/info/exclude 2>/dev/null || echo /.gpudata/ >>.git/info/exclude
rm -rf .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
    anndata==0.12.19 hyperopt==0.3.0 array-api-compat==1.16.0 legacy-api-wrap==1.5 natsort==8.4.0 zarr==3.1.6 \
    donfig==0.8.1.post1 numcodecs==0.17.1 google-crc32c scverse-misc==0.0.3 session-info2==0.4.1 \
    scvi-tools==1.4.2 ml_collections mudata==0.3.2 pyro-api pyro-ppl sparse scanpy==1.11.5 umap-learn==0.5.12 \
    pynndescent==0.7.0 pandas==2.3.3 pytz tzdata
python -m pip wheel -q --no-deps -w .whl docrep==0.3.2  # an sdist only
python benchmarks/_gpu_wheel_check.py .whl
mkdir -p .gpudata
cp ../shared/data/{cortex_zeisel_3005x200,pbmc4k_10x_4271x2000}.h5ad .gpudata/

tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
untracked=$(git ls-files -z --others --exclude-standard | xargs -0 -r du -cb | tail -1 | cut -f1)
carried=$(du -cb .whl .gpudata | tail -1 | cut -f1)
total=$(( tree + ${untracked:-0} + carried ))
limit=$(( 64 * 1024 * 1024 ))
echo "travels: working tree $tree + untracked ${untracked:-0} + .whl and .gpudata $carried = $total bytes (limit $limit)"
[ "$total" -lt "$limit" ] || { echo "too large for one device call: carry less"; exit 1; }
