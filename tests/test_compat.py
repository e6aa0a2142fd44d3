"""Results and journals written by the previous version (committed under benchmarks/) still load."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np
import pytest

import scanpy_autotune as sat
from scanpy_autotune._record import STATUSES, TrialRecord, best_of
from scanpy_autotune._results import read_results

matplotlib.use("Agg")

SEARCHES = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "searches"
OLD = "cortex_zeisel_3005x200_w2_asha_n40_s0_e100"  # 40 trials with ASHA, written before the record type


def test_uns_written_by_the_previous_version_loads_and_plots():
    import matplotlib.pyplot as plt

    adata = ad.read_h5ad(SEARCHES / f"{OLD}_uns.h5ad")
    res = read_results(adata)
    assert len(res.trials) == 40 and set(res.trials["status"]) <= set(STATUSES)
    best = best_of(res.trials.itertuples())
    assert best.trial_id == res.best["trial_id"] and best.loss == pytest.approx(res.best["loss"])
    table = sat.tl.trials_table(adata, top=3, bottom=2)
    assert list(table["group"]) == ["top"] * 3 + ["bottom"] * 2
    assert table["loss"].is_monotonic_increasing
    for plot in (sat.pl.trial_history, sat.pl.sensitivity, sat.pl.optimization_history, sat.pl.param_importance):
        axes = plot(adata, show=False)
        assert all(ax.has_data() for ax in np.ravel(axes))
        plt.close("all")


def test_journal_written_by_the_previous_version_decodes_to_records():
    lines = [json.loads(line) for line in (SEARCHES / f"{OLD}.jsonl").read_text().splitlines()]
    records = [TrialRecord.from_json(line) for line in lines if line.get("kind") == "trial"]
    assert len(records) == 40 and all(r.rung_values == {} for r in records)  # older lines have none
    assert sum(r.status == "pruned" for r in records) > 0
    assert min(r.loss for r in records if r.succeeded) == pytest.approx(
        read_results(ad.read_h5ad(SEARCHES / f"{OLD}_uns.h5ad")).best["loss"]
    )
