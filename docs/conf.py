"""Sphinx configuration of the scanpy-autotune documentation (the scverse set-up).

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html`` after
``pip install -e ".[docs]"``. Pages that repeat files living elsewhere in the
repository (the tutorial notebooks, the benchmark tables) are generated here at
every build, so they cannot drift from their sources.
"""

from __future__ import annotations

import builtins
import os
import shutil
import sys
import warnings
from datetime import date
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # document this checkout, installed or not

import scanpy_autotune  # noqa: E402

try:  # sphinx-autodoc-typehints calls an API Sphinx 10 removes: noise, not a problem here
    from sphinx.deprecation import RemovedInSphinx10Warning
except ImportError:
    pass
else:
    warnings.filterwarnings(
        "ignore", category=RemovedInSphinx10Warning, module="sphinx_autodoc_typehints"
    )

# -- Project -------------------------------------------------------------------

project = "scanpy-autotune"
author = "the scanpy-autotune authors"
copyright = f"{date.today():%Y}, {author}"
version = release = scanpy_autotune.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",  # after napoleon, which it post-processes
    "sphinx.ext.intersphinx",
    "sphinx_copybutton",
    "sphinxarg.ext",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "**.ipynb_checkpoints",
    "design_changes.md",  # shown inside design.md
]
nitpicky = True  # a reference to this package that resolves to nothing is an error
default_role = "literal"

# -- API reference ---------------------------------------------------------------

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_ivar = True  # "Attributes" as fields: properties get their own entries
napoleon_use_param = True
typehints_defaults = "braces"
always_use_bars_union = True
typehints_document_rtype = True
always_document_param_types = True  # a parameter without a description still shows its type

# Private types in the signatures of Model's constructor and of Model.fit_prepared
# (the entry point of the search's workers): they have no page to link to.
nitpick_ignore = [
    ("py:class", name)
    for name in (
        "VAE",
        "TrainResult",
        "scanpy_autotune._vae._module.VAE",
        "scanpy_autotune._vae._train.TrainResult",
        "scanpy_autotune._vae._data.CountData",
        "scanpy_autotune._vae._data.DeviceCounts",
        "scanpy_autotune._vae._data.Split",
    )
]

# -- Markdown and notebooks --------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3
# Where a Markdown link that is neither a URL nor a file looks: labels and Python
# objects (sphinx-argparse's domain cannot answer such lookups and would warn).
myst_ref_domains = ["std", "py"]
# The notebooks are committed executed; the docs show their stored outputs.
nb_execution_mode = "off"
nb_merge_streams = True

# -- HTML --------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {"show_toc_level": 2}
html_show_sphinx = False

# -- Links to other projects' documentation ----------------------------------------

# Off by default: building must not need the network (CI machines here reach only
# package registries, and a failed inventory download is a warning, fatal under -W).
# SAT_DOCS_INTERSPHINX=1 turns the links on. hyperopt has no Sphinx inventory
# (its documentation is MkDocs), so its names are never links.
INTERSPHINX = {
    "python": "https://docs.python.org/3",
    "numpy": "https://numpy.org/doc/stable",
    "pandas": "https://pandas.pydata.org/docs",
    "scipy": "https://docs.scipy.org/doc/scipy",
    "matplotlib": "https://matplotlib.org/stable",
    "anndata": "https://anndata.readthedocs.io/en/stable",
    "scanpy": "https://scanpy.readthedocs.io/en/stable",
    "torch": "https://docs.pytorch.org/docs/stable",
}
intersphinx_mapping = (
    {name: (url, None) for name, url in INTERSPHINX.items()}
    if os.environ.get("SAT_DOCS_INTERSPHINX") == "1"
    else {}
)

# Packages whose names appear in signatures and docstrings. A reference to them that
# no inventory resolves stays plain text (nitpicky still checks this package's own).
EXTERNAL_PACKAGES = {
    "anndata", "dask", "distributed", "h5py", "hyperopt", "matplotlib", "mpl_toolkits",
    "numpy", "np", "pandas", "pd", "scanpy", "sc", "scipy", "sklearn", "torch",
    "scib_metrics", "AnnData", "Axes", "DataFrame", "Figure", "Tensor",
}


def _is_external(target: str) -> bool:
    root = target.lstrip("~.").split(".")[0]
    return (
        root in EXTERNAL_PACKAGES
        or root in sys.stdlib_module_names
        or hasattr(builtins, root)
    )


def _plain_text_for_external(app, env, node, contnode):
    """Show an unresolved reference to another package as text instead of warning."""
    if node.get("refdomain") == "py" and _is_external(node.get("reftarget", "")):
        return contnode
    return None


# -- Pages generated from files elsewhere in the repository -------------------------


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``text`` unless ``path`` holds it already (keeps incremental builds fast)."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _sync_folder(folder: Path, wanted: dict[str, str | Path]) -> None:
    """Make ``folder`` hold exactly ``wanted``: name -> text, or -> a file to copy."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in wanted:
            stale.unlink()
    for name, source in wanted.items():
        target = folder / name
        if isinstance(source, Path):
            if not target.exists() or target.read_bytes() != source.read_bytes():
                shutil.copy2(source, target)
        else:
            _write_if_changed(target, source)


def generate_pages() -> None:
    """Copy the tutorial notebooks in and write one page per benchmark table."""
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    _sync_folder(HERE / "tutorials" / "notebooks", {nb.name: nb for nb in notebooks})
    # docs/benchmarks/results/<name>.md mirrors benchmarks/results/<name>.md, so the
    # README's links (benchmarks/results/x.md) and the tables' links to each other
    # resolve from docs/benchmarks.md as they do in the repository.
    tables = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    _sync_folder(
        HERE / "benchmarks" / "results",
        {
            table.name: f"```{{include}} ../../../benchmarks/results/{table.name}\n```\n"
            for table in tables
        },
    )


generate_pages()


def _link_tables_to_their_pages(app, docname: str, source: list[str]) -> None:
    """Point a page's links to ``benchmarks/results/*.md`` at the pages made from them.

    In the repository a page of ``docs/`` links to ``../benchmarks/results/x.md``
    (so the link works on GitHub); in the built site that table is the page
    ``benchmarks/results/x`` generated above.
    """
    up = "../" * docname.count("/")
    source[0] = source[0].replace(
        f"]({up}../benchmarks/results/", f"]({up}benchmarks/results/"
    )


def setup(app) -> None:
    """Register the fallback for references into other packages' documentation."""
    # After intersphinx (priority 500): only what no inventory resolved reaches it.
    app.connect("missing-reference", _plain_text_for_external, priority=900)
    app.connect("source-read", _link_tables_to_their_pages)
