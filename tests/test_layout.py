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


def test_driver_modules_import_no_torch():
    code = PROBE.format(path=str(PACKAGE), vae_path=str(PACKAGE / "_vae"), names=TORCH_FREE)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"torch imported by: {result.stdout}"


def test_a_workers_imports_leave_out_anndata_and_torch_dynamo():
    """A search's worker process never builds an AnnData (but for a custom objective, which imports it):
    importing anndata cost every worker about 0.7 s of its start (design_changes 40). Nor does its optimizer
    import torch._dynamo, as building a torch.optim.Optimizer does: 2-3 s of its first trial (design_changes 41)."""
    code = (
        "import sys, torch\n"
        "import scanpy_autotune._search._worker, scanpy_autotune._search._objective, scanpy_autotune._vae\n"
        "from scanpy_autotune._vae._optim import FlatAdam\n"
        "module = torch.nn.Linear(3, 2)\n"
        "optimizer = FlatAdam(module)\n"
        "module(torch.ones(4, 3)).sum().backward()\n"
        "optimizer.step()\n"
        "print('anndata' in sys.modules, 'torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False False"


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
