from pathlib import Path

import anndata as ad
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not found (the shared data folder sits beside the project root)")
    return path


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cortex_path() -> Path:
    return shared_file("cortex_zeisel_3005x200.h5ad")


@pytest.fixture
def cortex(cortex_path) -> ad.AnnData:
    return ad.read_h5ad(cortex_path)


@pytest.fixture
def pbmc68k_path() -> Path:
    return shared_file("pbmc68k_counts_700x765.h5ad")


@pytest.fixture(scope="session")
def search_result(cortex_path) -> ad.AnnData:
    """A real small search on 500 Cortex cells with every trial status, shared by result readers.

    Two CPU workers, ASHA pruning (rungs at 2 and 4 epochs), and an objective
    that refuses 4-layer networks, so the result holds ok, pruned and failed trials.
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
        objective=objective, pruner="asha", pruner_kwargs={"min_epochs": 2, "eta": 2},
    )
    return adata
