"""Shared fixtures: small real count data committed in tests/data (see its README.md)."""

from pathlib import Path

import anndata as ad
import pytest

DATA = Path(__file__).resolve().parent / "data"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a CUDA device: without one they are deselected (not skipped).

    They run on a lent GPU machine (``benchmarks/gpu_session.sh`` runs ``pytest -m cuda``).
    """
    import torch

    if torch.cuda.is_available():
        return
    kept = [item for item in items if item.get_closest_marker("cuda") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


@pytest.fixture(scope="session")
def cortex_path() -> Path:
    """800 Zeisel cortex cells x 200 genes, ``obs["cell_type"]``."""
    return DATA / "cortex_800x200.h5ad"


@pytest.fixture
def cortex(cortex_path) -> ad.AnnData:
    return ad.read_h5ad(cortex_path)


@pytest.fixture(scope="session")
def cellbench_path() -> Path:
    """360 CellBench cells (24 per plate x cell line) x 400 genes, ``obs["batch"]``, ``obs["cell_type"]``."""
    return DATA / "cellbench_360x400.h5ad"


@pytest.fixture
def cellbench(cellbench_path) -> ad.AnnData:
    return ad.read_h5ad(cellbench_path)


@pytest.fixture(scope="session")
def pbmc68k_path(tmp_path_factory) -> Path:
    """``sat.datasets.pbmc68k_counts()`` (700 cells x 765 genes, rebuilt offline) in an ``.h5ad``."""
    import scanpy_autotune as sat

    path = tmp_path_factory.mktemp("pbmc68k") / "pbmc68k_counts_700x765.h5ad"
    sat.datasets.pbmc68k_counts().write_h5ad(path)
    return path


@pytest.fixture(scope="session")
def search_result(cortex_path) -> ad.AnnData:
    """A real small search on 500 Cortex cells with every trial status, shared by result readers.

    Two CPU workers, ASHA pruning (rungs at 2 and 4 epochs; the first five
    trials, TPE's seeded random draws, are never pruned), and an objective that
    refuses 4-layer networks (trial 3 draws one), so the result holds ok, pruned
    and failed trials whatever order the two workers finish in.
    """
    import numpy as np

    import scanpy_autotune as sat

    def objective(model, heldout):
        if model.hyperparameters["n_layers"] == 4:
            raise RuntimeError("4-layer networks are refused by this test objective")
        return model.marginal_nll(heldout, n_mc=5, cells="all")

    cortex = ad.read_h5ad(cortex_path)
    adata = cortex[np.random.default_rng(1).choice(cortex.n_obs, 500, replace=False)].copy()
    sat.tl.autotune(
        adata, max_evals=12, max_epochs=8, n_workers=2, progress=False, seed=0,
        objective=objective, pruner="asha",
        pruner_kwargs={"min_epochs": 2, "eta": 2, "startup_trials": 5, "startup_rungs": 2},
    )
    # which trials fail or are pruned follows TPE's draws: a change of the default space or of
    # TPE can leave a status out, which the readers' tests would then miss without saying so
    from scanpy_autotune._importances import MIN_TRIALS_IMPORTANCE
    from scanpy_autotune._results import read_results

    statuses = read_results(adata).trials["status"].value_counts()
    assert statuses.get("fail", 0) and statuses.get("pruned", 0), (
        f"search_result lacks a failed or pruned trial ({statuses.to_dict()}): change its objective's refusal rule"
    )
    assert statuses.get("ok", 0) >= MIN_TRIALS_IMPORTANCE, f"search_result has too few ok trials: {statuses.to_dict()}"
    return adata
