"""Check that every wheel in .whl/ finds its requirements in .whl/ or on the GPU image (gpu_prepare.sh).

    python benchmarks/_gpu_wheel_check.py .whl

The image's packages are those /work/.library/device/KINDS.md lists for the 'cuda' image (read
2026-11-17); Python 3.12. Requirements on a wheel here are checked for their version and
their extras; those on the image only by name (its versions are not listed). Exits 1 and names what
is missing.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

IMAGE = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax
opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric
torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3
uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()


#: Requirements left out on purpose, and why.
NOT_NEEDED = {
    "scikit-misc": "scanpy needs it only for flavor='seurat_v3' highly variable genes (scvi-tools asks for "
                   "scanpy[skmisc]); no benchmark calls that",
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def metadata(wheel: Path) -> tuple[str, list[Requirement]]:
    """A wheel's version and requirements."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode().splitlines()
    version = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Version:"))
    return version, [Requirement(line.split(":", 1)[1]) for line in lines if line.startswith("Requires-Dist:")]


def main(folder: str) -> int:
    wheels = {normalize(w.name.split("-")[0]): metadata(w) for w in Path(folder).glob("*.whl")}
    image = {normalize(n) for n in IMAGE}
    missing = []
    # (package, extra) pairs to check: every wheel without extras, then the extras its dependants ask for.
    todo = [(name, "") for name in wheels]
    seen = set()
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for req in wheels[name][1]:
            env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64", "extra": extra}
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if req.marker is None and extra:
                continue  # checked with no extra
            needed = normalize(req.name)
            where = f"{name}[{extra}]" if extra else name
            if needed in wheels:
                if not req.specifier.contains(wheels[needed][0], prereleases=True):
                    missing.append(f"{where} needs {req}, {folder} has {needed} {wheels[needed][0]}")
                todo += [(needed, e) for e in req.extras]
            elif needed not in image and needed not in NOT_NEEDED:
                missing.append(f"{where} needs {req}: neither on the image nor in {folder}")
    print("\n".join(missing) if missing else f"{len(wheels)} wheels: every requirement is on the image or in {folder}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".whl"))
