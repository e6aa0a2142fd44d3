"""The package's layout rules: which modules may import what."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scanpy_autotune"


def _modules(folder: str) -> list[str]:
    """Every module under the package's ``folder``, dotted (``_search._dask._driver``)."""
    names = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        if path.name == "__main__.py":  # runs the command when imported
            continue
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


#: Modules that import no torch: every module of the search (the model comes in when a
#: trial runs), and the driver's and the command line's helpers that read results.
TORCH_FREE = [
    "_record", "_results", "_validation", "_paths", "_importances", "_logging", "_errors",
    "_stop_reason", "_signals", "_docs", *_modules("_search"), *_modules("cli"), "_vae._config", "_vae._saved_config",
]

# Import modules of the package without running scanpy_autotune/__init__.py (which
# imports the model, hence torch), then look at what was imported.
PROBE = """
import sys, types
package = types.ModuleType("scanpy_autotune")
package.__path__ = [{path!r}]
package.__version__ = "0"
sys.modules["scanpy_autotune"] = package
vae = types.ModuleType("scanpy_autotune._vae")  # a package whose __init__ imports the model
vae.__path__ = [{vae_path!r}]
sys.modules["scanpy_autotune._vae"] = vae
import importlib
for name in {names!r}:
    importlib.import_module("scanpy_autotune." + name)
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


WORKER_PROBE = """
import sys, torch
import scanpy_autotune._search._worker, scanpy_autotune._search._objective, scanpy_autotune._vae
from scanpy_autotune._vae._optim import FlatAdam
module = torch.nn.Linear(3, 2)
optimizer = FlatAdam(module)
module(torch.ones(4, 3)).sum().backward()
optimizer.step()
print('anndata' in sys.modules, 'torch._dynamo' in sys.modules)
import scanpy_autotune.tl
from scanpy_autotune._logging import follow_scanpy_verbosity
follow_scanpy_verbosity()
print('scanpy' in sys.modules)
"""


@pytest.fixture(scope="module")
def import_probes() -> dict[str, subprocess.CompletedProcess]:
    """The two import probes, run side by side in fresh interpreters (each spends seconds importing)."""
    codes = {
        "driver": PROBE.format(path=str(PACKAGE), vae_path=str(PACKAGE / "_vae"), names=TORCH_FREE),
        "worker": WORKER_PROBE,
    }
    running = {
        name: subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, code in codes.items()
    }
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


@pytest.mark.slow  # starts two interpreters that import everything: 5-7 s
def test_driver_modules_import_no_torch(import_probes):
    result = import_probes["driver"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"torch imported by: {result.stdout}"


@pytest.mark.slow  # starts two interpreters that import everything: 5-7 s
def test_a_workers_imports_leave_out_anndata_and_torch_dynamo(import_probes):
    """A search's worker process never builds an AnnData (but for a custom objective, which imports it):
    importing anndata cost every worker about 0.7 s of its start (design_changes 40). Nor does its optimizer
    import torch._dynamo, as building a torch.optim.Optimizer does: 2-3 s of its first trial (design_changes 41)."""
    result = import_probes["worker"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "False False"


@pytest.mark.slow  # starts two interpreters that import everything: 5-7 s
def test_the_search_imports_scanpy_only_when_its_user_did(import_probes):
    """``sat.tl`` reads ``sc.settings.verbosity`` only from an imported Scanpy: 2 s less for the command line."""
    result = import_probes["worker"]
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[1] == "False"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):  # `from .. import tl` imports tl: the names count too
            base = "." * node.level + (node.module or "")
            found.extend(f"{base}.{alias.name}" if node.module else f"{base}{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    "folder, forbidden",
    [
        ("_vae", ("_search", "tl", "pl", "cli")),  # the model knows nothing of the search
        ("_search", ("tl", "pl", "cli")),  # cli -> tl -> _search -> _vae
        ("pl", ("_vae", "_search", "tl", "torch")),  # plots read adata.uns only
        ("cli", ("_vae", "_search", "torch")),  # the command line goes through tl (and pl)
    ],
)
def test_imports_flow_one_way(folder, forbidden):
    paths = [PACKAGE / folder] if folder.endswith(".py") else (PACKAGE / folder).rglob("*.py")
    for path in paths:
        for module in _imports(path):
            parts = module.lstrip(".").split(".")
            assert not set(parts) & set(forbidden), f"{path.relative_to(PACKAGE)} imports {module}"


def test_tests_do_not_read_the_shared_folder():
    """A fresh clone has no ../shared: no test may reach for it (only the data script does)."""
    for path in Path(__file__).parent.rglob("*.py"):
        if path.name in ("test_layout.py", "make_test_data.py"):
            continue
        text = path.read_text()
        for pattern in ("shared/data", '"shared" /', "'shared' /", "../shared"):
            assert pattern not in text, f"{path.name} refers to {pattern}"


@pytest.mark.parametrize("name", ["tl", "pl"])
def test_the_public_names_are_the_documented_ones(name):
    """``dir(sat.tl)`` (a notebook's tab completion) shows what the API reference lists, nothing else."""
    import scanpy_autotune as sat

    module = getattr(sat, name)
    assert {n for n in dir(module) if not n.startswith("_")} == set(module.__all__)
