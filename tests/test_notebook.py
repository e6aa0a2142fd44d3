"""The tutorial notebooks run green (executed with nbclient, as a user would run them).

Each runs every cell as committed, with a smaller search budget than its own
(the constants of its first code cell): the code paths are the same, and
``python notebooks/execute.py`` runs them with their own budget when they
are committed with their outputs.
"""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _with_budget(nb, budget: dict[str, int]) -> None:
    """Set the notebook's budget constants (``MAX_EVALS = 12``) to ``budget``'s values."""
    cell = next(c for c in nb.cells if c.cell_type == "code")
    for name, value in budget.items():
        cell.source, n = re.subn(rf"^{name} = \d+$", f"{name} = {value}", cell.source, flags=re.MULTILINE)
        assert n == 1, f"{name} is not set in the notebook's first code cell"


def _execute(name: str, tmp_path: Path, budget: dict[str, int]) -> tuple[str, list]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    _with_budget(nb, budget)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(
        out.get("text", "") + str(out.get("data", {}).get("text/plain", ""))
        for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
    )
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells if cell.cell_type == "code"
                 for out in cell.outputs)
    assert not errors, errors
    return outputs, images


@pytest.mark.slow
def test_tutorial_notebook_runs(tmp_path):
    outputs, images = _execute("autotune_tutorial.ipynb", tmp_path, {"MAX_EVALS": 6, "MAX_EPOCHS": 20})
    assert "best trial" in outputs and "Error" not in outputs.replace("ValueError", "")
    assert "silhouette" in outputs and images >= 4


@pytest.mark.slow
def test_integration_tutorial_notebook_runs(tmp_path):
    outputs, images = _execute("integration_tutorial.ipynb", tmp_path, {"MAX_EVALS": 4, "MAX_EPOCHS": 15})
    assert "best trial" in outputs and "Total" in outputs
    assert "bio_conservation" in outputs and "gene_likelihood" in outputs  # scores table, scvi-tools hand-off
    assert images >= 3  # the Pareto plot and the two UMAP figures
