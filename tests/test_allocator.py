"""Malloc thresholds of worker processes: Dask's MALLOC_TRIM_THRESHOLD_ must not make every tensor a fresh mmap."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt"),
    pytest.mark.slow,  # end-to-end: real worker processes
]

# Allocating and freeing 1 MiB tensors: with fixed thresholds each one is a new
# mmap and page-faults all its 256 pages in; with glibc's dynamic threshold the
# freed block is reused and faults nothing.
_SCRIPT = """
import json, resource, torch
from scanpy_autotune._search._allocator import restore_dynamic_thresholds


def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(100):
        torch.ones(1 << 18)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

fixed = faults()
changed = restore_dynamic_thresholds()
faults()  # the first reuse after the change may still map once
print(json.dumps({"fixed": fixed, "changed": changed, "restored": faults()}))
"""


def _run(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dask_nanny_threshold_is_undone():
    result = _run({"MALLOC_TRIM_THRESHOLD_": "65536"})  # what distributed's nanny sets
    assert result["changed"] is True
    assert result["fixed"] > 100 * 200  # about 256 page faults per allocation
    assert result["restored"] < result["fixed"] / 20


def test_default_environment_is_left_alone():
    result = _run({})
    assert result["changed"] is False
    # glibc's dynamic threshold already reuses the block: after the first few allocations
    # map and fault in, the rest fault nothing (about 6-24 faults per allocation in all,
    # against 256 under the nanny's fixed threshold).
    assert result["fixed"] < 100 * 50
