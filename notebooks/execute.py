"""Execute the tutorial notebooks in place, so they are committed with their outputs and figures.

    python notebooks/execute.py                # every notebook in this folder
    python notebooks/execute.py NAME.ipynb     # one

Each notebook runs top to bottom in a fresh kernel (as ``tests/test_notebook.py``
runs it) from a temporary folder, and is written back with its outputs, so a
reader browsing the repository or the documentation sees the figures. The
small budgets at the top of each notebook keep this to a few minutes on a CPU.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as folder:
        NotebookClient(
            notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": folder}}
        ).execute()
    nbformat.write(notebook, path)
    print(f"executed {path.name}")


def main(names: list[str]) -> None:
    paths = [HERE / name for name in names] if names else sorted(HERE.glob("*.ipynb"))
    for path in paths:
        execute(path)


if __name__ == "__main__":
    main(sys.argv[1:])
