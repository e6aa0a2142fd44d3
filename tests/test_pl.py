"""sat.pl: every plot on a search result (in memory; one test compares each plot after an .h5ad round trip).

``results_adata`` is the one fixture to swap for a real search (see test_results.py):
it returns conftest's ``search_result`` when there is one. Expected values are
read from the data, never from how the synthetic records were made.
"""

from __future__ import annotations

import ast
import copy
import inspect
import logging
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from test_results import KEY, SEARCHED, SETTINGS, make_records, make_results_adata  # noqa: E402

from scanpy_autotune import pl, tl  # noqa: E402
from scanpy_autotune._importances import MIN_TRIALS_IMPORTANCE  # noqa: E402
from scanpy_autotune._results import Results, build_results, read_results, write_results  # noqa: E402
from scanpy_autotune.pl._utils import LOSS_LABEL, TRIAL_CMAP, loss_names  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ["trial_history", "sensitivity", "optimization_history", "param_importance"]


@pytest.fixture(scope="module")
def results_adata(request) -> ad.AnnData:
    """A searched AnnData: the real ``search_result`` when defined, else synthetic records."""
    try:
        return request.getfixturevalue("search_result")
    except pytest.FixtureLookupError:
        return make_results_adata()


@pytest.fixture(scope="module")
def read_back(results_adata, tmp_path_factory) -> ad.AnnData:
    """The result read back from an .h5ad file."""
    path = tmp_path_factory.mktemp("h5ad") / "results.h5ad"
    results_adata.write_h5ad(path)
    return ad.read_h5ad(path)


@pytest.fixture(scope="module")
def adata(results_adata) -> ad.AnnData:
    """The result in memory; :func:`test_every_plot_draws_the_same_after_an_h5ad_round_trip` covers the file."""
    return results_adata


def _drawn(fig) -> list:
    """What a figure shows: per Axes its labels, limits, ticks, texts, lines and points."""
    shown = []
    for ax in fig.axes:
        shown.append((
            _gid(ax), ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale(), ax.get_yscale(),
            np.round(ax.get_xlim(), 9).tolist(), np.round(ax.get_ylim(), 9).tolist(),
            [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()],
            [t.get_text() for t in ax.texts],
            [np.round(line.get_xydata(), 9).tolist() for line in ax.get_lines()],
            [np.round(np.asarray(c.get_offsets()), 9).tolist() for c in ax.collections],
            [(_gid(p), np.round(p.get_height(), 9)) for p in ax.patches if hasattr(p, "get_height")],
        ))
    suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
    return [suptitle, *shown]


@pytest.mark.parametrize("plot", PLOTS)
def test_every_plot_draws_the_same_after_an_h5ad_round_trip(adata, read_back, plot):
    """Read back from .h5ad (categoricals, NumPy scalars and arrays as anndata writes them), a result draws
    exactly what it drew in memory, and the plot leaves the object as it was."""
    before = copy.deepcopy(read_back.uns[KEY])
    drawn = []
    for result in (adata, read_back):
        panels = getattr(pl, plot)(result, show=False)
        drawn.append(_drawn(np.ravel(panels)[0].figure))
        plt.close("all")
    assert drawn[0] == drawn[1]
    _assert_same(read_back.uns[KEY], before)


def _assert_same(value, expected) -> None:
    """Equal, through dicts, lists, DataFrames and arrays (NaN equal to NaN)."""
    if isinstance(expected, dict):
        assert isinstance(value, dict) and value.keys() == expected.keys()
        for name in expected:
            _assert_same(value[name], expected[name])
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(value, expected)
    elif isinstance(expected, (np.ndarray, list, tuple)) and not isinstance(expected, str):
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected))
    else:
        assert value == expected or (value != value and expected != expected), (value, expected)


@pytest.fixture
def res(adata) -> Results:
    return read_results(adata, KEY)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _gid(artist) -> str:
    return artist.get_gid() or ""


def _n_ok(res: Results) -> int:
    t = res.trials
    return int(((t["status"] == "ok") & np.isfinite(t["loss"])).sum())


def _collections(ax, gid: str):
    return [c for c in ax.collections if _gid(c) == gid]


def _offsets(ax, gid: str) -> np.ndarray:
    found = _collections(ax, gid)
    assert len(found) <= 1, gid
    return np.asarray(found[0].get_offsets()) if found else np.empty((0, 2))


# ----------------------------------------------------------------------------- trial_history


def test_trial_history_one_line_per_trial_with_history(adata, res):
    ax = pl.trial_history(adata, show=False)
    lines = {_gid(line): line for line in ax.get_lines() if _gid(line).startswith("trial-")}
    curves = res.history["validation_elbo"]
    has_history = np.isfinite(curves).any(axis=1)
    trials = res.trials
    assert set(lines) == {f"trial-{t}" for t in trials["trial_id"][has_history]}
    style = {"ok": "-", "pruned": ":", "fail": "--"}
    for tid, status, drawn in zip(trials["trial_id"], trials["status"], has_history, strict=True):
        if not drawn:
            continue  # failed before the first epoch: nothing to draw
        line = lines[f"trial-{tid}"]
        assert line.get_label() == f"trial {tid} ({status})"
        assert line.get_linestyle() == style[status]
        y = np.asarray(line.get_ydata(), dtype=float)
        recorded = curves[trials.index[trials["trial_id"] == tid][0]]
        np.testing.assert_allclose(np.abs(y), np.abs(recorded[: y.size]))
    for status in ("ok", "pruned", "fail"):
        n_drawn = sum(line.get_label().endswith(f"({status})") for line in lines.values())
        assert n_drawn == int((has_history & (trials["status"] == status)).sum())
    assert len(ax.figure.axes) == 2  # the plot and its colorbar
    assert "validation ELBO (held out of training)" in ax.get_title()
    # probe 22: the epoch whose weights each successful trial kept (its best validation epoch) is marked
    ok = trials[(trials["status"] == "ok").to_numpy() & has_history]
    expected = [(row.best_epoch + 1, abs(curves[i][row.best_epoch])) for i, row in ok.iterrows()]
    kept = _offsets(ax, "kept")
    np.testing.assert_allclose(sorted(map(tuple, np.abs(kept))), sorted(expected))
    assert "weights kept (best validation epoch)" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_trial_history_colors_run_dark_to_light(adata, res):
    """viridis, without its palest yellow (probe 22: the red-to-green map hid order from red-green colour
    blindness, and its middle trials looked alike)."""
    ax = pl.trial_history(adata, show=False)
    lines = sorted(
        (line for line in ax.get_lines() if _gid(line).startswith("trial-")),
        key=lambda line: int(_gid(line).split("-")[1]),
    )
    assert len(lines) >= 2
    luminance = [np.dot(to_rgb(line.get_color()), [0.2126, 0.7152, 0.0722]) for line in (lines[0], lines[-1])]
    if lines[0].get_label().endswith("(ok)") and lines[-1].get_label().endswith("(ok)"):
        assert luminance[0] < 0.2 < 0.6 < luminance[1] < 0.85, luminance  # dark blue to yellow-green, not white
    ids = res.trials["trial_id"].to_numpy()
    norm = plt.Normalize(ids.min(), ids.max())
    for line in lines:
        if line.get_label().endswith("(ok)"):
            tid = int(_gid(line).split("-")[1])
            np.testing.assert_allclose(to_rgb(line.get_color()), to_rgb(TRIAL_CMAP(norm(tid))))


def test_trial_history_robust_limits(adata, res):
    robust = pl.trial_history(adata, show=False).get_ylim()
    full = pl.trial_history(adata, show=False, robust=False).get_ylim()
    assert robust[1] <= full[1]
    curves = res.history["validation_elbo"]
    finals = np.array([row[np.isfinite(row)][-1] for row in curves if np.isfinite(row).any()])
    finals = np.abs(finals)
    if finals.max() > 10 * np.median(finals):  # a diverging trial: it must not set the scale
        assert robust[1] < finals.max()
        assert robust[1] < 3 * np.median(finals)


def test_trial_history_train_log_and_ax(adata):
    fig, given = plt.subplots()
    ax = pl.trial_history(adata, which="train", log=True, ax=given, show=False)
    assert ax is given
    assert ax.get_yscale() == "log"
    assert ax.get_title().startswith("training ELBO")
    with pytest.raises(ValueError, match="which="):
        pl.trial_history(adata, which="test", show=False)


# ----------------------------------------------------------------------------- sensitivity


def test_sensitivity_points_best_and_axes(adata, res):
    panels = pl.sensitivity(adata, show=False)
    kinds = res.param_kinds()
    assert isinstance(panels, np.ndarray) and panels.shape == (len(kinds),)
    fig = panels[0].figure
    assert [_gid(ax) for ax in fig.axes if _gid(ax).startswith("param-")] == [
        f"param-{name}" for name in kinds
    ]
    assert [_gid(ax) for ax in panels] == [f"param-{name}" for name in kinds]
    trials = res.trials
    loss = trials["loss"].to_numpy(dtype=float)
    best_row = trials.index[trials["trial_id"] == res.best["trial_id"]]
    for ax in panels:
        name = _gid(ax).removeprefix("param-")
        kind = kinds[name]
        if kind == "categorical":
            x_ok = trials[name].notna().to_numpy()
            cats = sorted({str(v) for v in trials[name].dropna()})
            assert sorted(t.get_text() for t in ax.get_xticklabels()) == cats
        else:
            x = trials[name].to_numpy(dtype=float)
            x_ok = np.isfinite(x) & ((x > 0) if kind == "log" else True)
            assert ax.get_xscale() == ("log" if kind == "log" else "linear")
        shown = np.isfinite(loss) & x_ok
        for status in ("ok", "pruned", "fail"):
            expected = int((shown & (trials["status"] == status).to_numpy()).sum())
            pts = _offsets(ax, f"points-{status}")
            assert len(pts) == expected, (name, status)
            np.testing.assert_allclose(
                np.sort(pts[:, 1]), np.sort(loss[shown & (trials["status"] == status).to_numpy()])
            )
        # probe 22: trials without a loss stand at their value along the bottom, so that a value that
        # always failed does not look untried; those beyond the robust range along the edge they passed
        for status in ("fail", "pruned"):
            sel = x_ok & ~np.isfinite(loss) & (trials["status"] == status).to_numpy()
            crosses = _offsets(ax, f"points-{status}-noloss")
            assert len(crosses) == int(sel.sum()), (name, status)
            if kind != "categorical" and sel.any():
                np.testing.assert_allclose(np.sort(crosses[:, 0]), np.sort(trials[name].to_numpy(float)[sel]))
        low, high = ax.get_ylim()
        beyond = x_ok & np.isfinite(loss) & ((loss > high) | (loss < low))
        assert len(_offsets(ax, "points-off-scale")) == int(beyond.sum()), name
        star = _offsets(ax, "best")
        if res.best["trial_id"] >= 0 and shown[best_row].all():
            assert star.shape == (1, 2)
            assert star[0, 1] == pytest.approx(res.best["loss"])
            if kind != "categorical":
                assert star[0, 0] == pytest.approx(float(trials.loc[best_row[0], name]))
        else:
            assert star.size == 0
    n_fail = int((trials["status"] == "fail").sum())
    title = " ".join(fig._suptitle.get_text().split())  # wrapped to the figure's width
    if n_fail:
        assert f"{n_fail} failed" in title
    elif np.isfinite(loss).all():  # otherwise the trials without a loss (pruned) are counted instead
        assert "none failed" in title
    assert f"{int(np.isfinite(loss).sum())} trials with a loss" in title
    if (~np.isfinite(loss)).any():
        assert "without a loss (crosses at the bottom)" in title
    label = loss_names(res.params)[0]  # on the first panel of each row of 3 (they share y)
    assert [ax.get_ylabel() for ax in panels] == [label if i % 3 == 0 else "" for i in range(len(panels))]


def test_sensitivity_of_trials_of_one_length_says_it_instead_of_a_colour_bar():
    """A colour bar of a single value would show a made-up range of epochs (27-33 for 30)."""
    adata = make_results_adata()
    trials = adata.uns[KEY]["trials"]
    trials["n_epochs"] = 30
    panels = pl.sensitivity(adata, show=False)
    fig = panels[0].figure
    assert all(_gid(ax).startswith("param-") for ax in fig.axes)  # no colour bar
    assert "each trained 30 epochs" in fig._suptitle.get_text()
    trials.loc[trials.index[0], "n_epochs"] = 12
    fig = pl.sensitivity(adata, show=False)[0].figure
    (bar,) = [ax for ax in fig.axes if not _gid(ax).startswith("param-")]
    assert bar.get_ylabel() == "epochs trained" and "each trained" not in fig._suptitle.get_text()


def test_sensitivity_subset_and_unknown(adata, res):
    name = next(iter(res.param_kinds()))
    ax = pl.sensitivity(adata, params=name, show=False)
    assert isinstance(ax, plt.Axes) and _gid(ax) == f"param-{name}"
    assert [_gid(a) for a in ax.figure.axes if _gid(a).startswith("param-")] == [f"param-{name}"]
    with pytest.raises(
        ValueError, match=r"Unknown hyperparameter\(s\) \['nope'\]; valid names are"
    ):
        pl.sensitivity(adata, params=["nope"], show=False)


def _n_points(ax) -> int:
    return sum(len(_offsets(ax, f"points-{status}")) for status in ("ok", "pruned", "fail"))


def test_sensitivity_into_one_given_axes(adata, res, caplog):
    name = next(iter(res.param_kinds()))
    fig, given = plt.subplots()
    fig.suptitle("mine")
    n_figures = len(plt.get_fignums())
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"):
        out = pl.sensitivity(adata, params=name, ax=given, show=False)
    assert out is given
    assert len(plt.get_fignums()) == n_figures  # drew into the caller's figure
    assert _gid(given) == f"param-{name}" and given.get_title() == name
    expected = pl.sensitivity(adata, params=name, show=False)
    assert _n_points(given) == _n_points(expected) > 0
    assert given.get_ylim() == pytest.approx(expected.get_ylim())
    assert fig._suptitle.get_text() == "mine"  # the caller's title is left alone
    assert "trials with a loss" in caplog.text  # what the title would have said is logged


def test_sensitivity_into_a_list_and_a_grid_of_axes(adata, res):
    names = list(res.param_kinds())[:2]
    fig, given = plt.subplots(1, 2)
    out = pl.sensitivity(adata, params=names, ax=list(given), show=False)
    assert isinstance(out, np.ndarray) and list(out) == list(given)
    assert [_gid(ax) for ax in given] == [f"param-{n}" for n in names]
    assert [ax.get_ylabel() for ax in given] == [loss_names(res.params)[0], ""]  # first column only
    for ax in given:
        assert _n_points(ax) > 0
    names = list(res.param_kinds())[:4]
    rows = -(-len(names) // 2)
    fig, grid = plt.subplots(rows, 2, squeeze=False)
    grid = grid.ravel()[: len(names)]
    out = pl.sensitivity(adata, params=names, ax=grid, show=False)
    assert list(out) == list(grid)  # a 2-D array of Axes is read row by row
    assert [_gid(ax) for ax in grid] == [f"param-{n}" for n in names]
    fig, grid = plt.subplots(2, 2)
    pl.sensitivity(adata, params=names[0], ax=grid[1, 1], show=False)  # probe 22: a lone panel, second column
    assert grid[1, 1].get_ylabel() == loss_names(res.params)[0]


def test_sensitivity_wrong_number_of_axes(adata, res):
    names = list(res.param_kinds())[:2]
    _, three = plt.subplots(1, 3)
    with pytest.raises(ValueError, match=r"ax= needs a sequence of 2 Axes, one per panel; got 3"):
        pl.sensitivity(adata, params=names, ax=three, show=False)
    with pytest.raises(ValueError, match=r"ax= needs a sequence of 2 Axes, one per panel; got 1"):
        pl.sensitivity(adata, params=names, ax=three[0], show=False)
    with pytest.raises(ValueError, match=r"ax= needs one Axes, one per panel; got 2"):
        pl.sensitivity(adata, params=names[0], ax=three[:2], show=False)
    with pytest.raises(TypeError, match="ax= must be an Axes or a sequence of Axes"):
        pl.sensitivity(adata, params=names[0], ax="left", show=False)
    assert not any(_gid(ax).startswith("param-") for ax in three)  # nothing was drawn


# ----------------------------------------------------------------------------- optimization_history


def test_optimization_history(adata, res):
    ax = pl.optimization_history(adata, show=False)
    t = res.trials.sort_values("completion_order")
    finite = np.isfinite(t["loss"]).to_numpy()
    status = t["status"].to_numpy()
    x = t["completion_order"].to_numpy() + 1
    ok = finite & (status == "ok")
    pts = _offsets(ax, "points-ok")
    np.testing.assert_allclose(pts, np.column_stack([x[ok], t["loss"].to_numpy()[ok]]))
    assert len(_offsets(ax, "points-pruned")) == int((finite & (status == "pruned")).sum())
    assert len(_offsets(ax, "points-fail")) == int((status == "fail").sum())
    assert len(_offsets(ax, "points-pruned-noloss")) == int((~finite & (status == "pruned")).sum())
    running = [line for line in ax.get_lines() if _gid(line) == "running-best"]
    best = _offsets(ax, "best")
    if not ok.any():
        assert not running and best.size == 0
    else:
        cummin = np.minimum.accumulate(t["loss"].to_numpy()[ok])
        np.testing.assert_allclose(running[0].get_ydata()[:-1], cummin)
        row = t[t["trial_id"] == res.best["trial_id"]]
        np.testing.assert_allclose(best, [[row["completion_order"].iloc[0] + 1, res.best["loss"]]])
        assert best[0, 1] == pytest.approx(cummin.min())
    default = [line for line in ax.get_lines() if _gid(line) == "default"]
    if res.default is not None and np.isfinite(res.default["loss"]):
        assert default[0].get_ydata()[0] == pytest.approx(res.default["loss"])
    else:
        assert not default
    low, high = ax.get_xlim()
    assert low < x.min() and x.max() < high  # every trial inside the axes, those along the bottom too
    assert all(float(tick).is_integer() for tick in ax.get_xticks())  # probe 22: no 2.5 trials
    low, high = ax.get_ylim()
    if res.best["trial_id"] >= 0:
        assert low <= res.best["loss"] <= high
    loss = t["loss"].to_numpy(dtype=float)
    beyond = np.isfinite(loss) & ((loss > high) | (loss < low))
    marked = np.concatenate([c.get_offsets()[:, 0] for c in _collections(ax, "points-off-scale")] or [[]])
    np.testing.assert_allclose(np.sort(marked), np.sort(x[beyond]))  # at their place in the search's course
    if beyond.any():
        assert f"{int(beyond.sum())} beyond the y-range (robust=False shows all)" in [
            text.get_text() for text in ax.get_legend().get_texts()
        ]


def test_optimization_history_says_when_a_search_was_cut_short_and_refuses_a_log_axis_it_cannot_draw():
    """Probe 22: a search ended by its timeout looked complete; log=True on -Total drew empty axes."""
    adata = make_results_adata()
    assert pl.optimization_history(adata, show=False).get_title() == "optimization history"
    adata.uns[KEY]["params"]["stop_reason"] = "timeout of 24 s"
    assert pl.optimization_history(adata, show=False).get_title() == "optimization history\nended early: timeout of 24 s"
    adata.uns[KEY]["params"]["stop_reason"] = "interrupted (Ctrl-C)"
    assert pl.optimization_history(adata, show=False).get_title() == "optimization history\nended early: interrupted (Ctrl-C)"
    adata.uns[KEY]["params"]["stop_reason"] = "the budget: 12 of max_evals=12 trials; then interrupted (Ctrl-C) " \
        "while the best model was prepared"  # every trial ran: nothing ended early
    assert pl.optimization_history(adata, show=False).get_title() == "optimization history"
    trials = adata.uns[KEY]["trials"]
    trials["loss"] = -trials["loss"].abs() / 1000  # as -Total
    n_figures = len(plt.get_fignums())
    with pytest.raises(ValueError, match=r"log=True needs positive values, and some losses are zero or negative"):
        pl.optimization_history(adata, log=True, show=False)
    assert len(plt.get_fignums()) == n_figures  # refused before a figure was made


def test_a_robust_range_never_hides_the_best_trial():
    """Probe 22: on the Pareto plot the best trial of an integration search was the one outlying
    -log p(x), and the robust range left it (and the end of the front) out of the panel."""
    from scanpy_autotune.pl._utils import value_limits

    values = np.array([10.0, 10.2, 10.1, 10.3, 10.2, 55.0])
    (low, high), n_off = value_limits(values, log=False)
    assert high < 55.0 and n_off == 1
    (low, high), n_off = value_limits(values, log=False, shown=values == 55.0)
    assert low < 10.0 and 55.0 < high and n_off == 0


def test_optimization_history_of_a_search_whose_trials_all_failed_shows_them():
    records = [{**r, "status": "fail", "loss": float("nan"), "error": "ValueError: scripted"} for r in make_records()]
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    write_results(adata, KEY, build_results(records, settings=SETTINGS, searched=SEARCHED))
    ax = pl.optimization_history(adata, show=False)
    x = _offsets(ax, "points-fail")[:, 0]
    low, high = ax.get_xlim()
    assert len(x) == len(records) and low < x.min() and x.max() < high


# ----------------------------------------------------------------------------- param_importance


def _importance_ready(adata: ad.AnnData, res: Results) -> tuple[ad.AnnData, Results]:
    """The search result, or synthetic records when the real (asynchronous, pruned) search finished too few trials."""
    if _n_ok(res) >= MIN_TRIALS_IMPORTANCE:
        return adata, res
    synthetic = make_results_adata()
    return synthetic, read_results(synthetic, KEY)


def test_param_importance(adata, res):
    adata, res = _importance_ready(adata, res)
    fast = {"n_estimators": 25}  # the default (100) is slower and no different in kind
    ax = pl.param_importance(adata, show=False, **fast)
    table = tl.importances(adata, **fast)
    pd.testing.assert_frame_equal(table, tl.importances(adata, **fast))  # deterministic
    assert set(table.index) == set(res.param_kinds())
    bars = sorted(ax.patches, key=lambda p: -p.get_y())  # top bar first
    assert [p.get_width() for p in bars] == pytest.approx(list(table["importance"]))
    ticks = sorted(zip(ax.get_yticks(), ax.get_yticklabels(), strict=True), key=lambda t: -t[0])
    assert [label.get_text() for _, label in ticks] == list(table.index)
    assert table["importance"].is_monotonic_decreasing
    assert "permutation importance" in ax.get_title()
    assert (
        "impurity" in pl.param_importance(adata, method="impurity", show=False, **fast).get_title()
    )


def test_param_importance_needs_trials():
    records = [r for r in make_records() if r["status"] == "ok"][:3]
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    write_results(adata, KEY, build_results(records, settings=SETTINGS, searched=SEARCHED))
    with pytest.raises(ValueError, match="at least 5 successful trials"):
        pl.param_importance(adata, show=False)
    with pytest.raises(ValueError, match="method="):
        tl.importances(adata, method="shap")
    with pytest.raises(ValueError, match="n_estimators=True must be an integer"):
        tl.importances(adata, n_estimators=True)
    with pytest.raises(ValueError, match="robust='yes' must be True or False"):
        tl.importances(adata, robust="yes")


@pytest.mark.parametrize(
    "objective, label, title",
    [
        ("marginal_nll", LOSS_LABEL, "the held-out loss"),
        ("integration", "−Total (scIB integration score)", "−Total (scIB)"),
        ("silhouette sha256:0123456789abcdef", "loss of your objective silhouette", "the objective silhouette"),
    ],
)
def test_plots_name_the_loss_the_search_minimised(objective, label, title):
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    write_results(adata, KEY, build_results(make_records(), settings={**SETTINGS, "objective": objective},
                                            searched=SEARCHED))
    assert pl.optimization_history(adata, show=False).get_ylabel() == label
    panels = pl.sensitivity(adata, show=False)
    assert panels.flat[0].get_ylabel() == label
    assert panels.flat[0].figure._suptitle.get_text().startswith(f"{title.removeprefix('the ')} vs hyperparameters")
    importance = pl.param_importance(adata, show=False, n_estimators=10)
    assert importance.get_title().startswith(f"hyperparameter importance for {title}\n")


@pytest.mark.parametrize(
    "plot, kwargs, error, message",
    [
        ("trial_history", dict(ax="x"), TypeError, r"ax= must be a matplotlib Axes, not 'x'"),
        ("optimization_history", dict(ax=3), TypeError, r"ax= must be a matplotlib Axes, not 3"),
        ("sensitivity", dict(ncols=0), ValueError, r"ncols=0 must be an integer >= 1"),
        ("sensitivity", dict(ncols=2.0), ValueError, r"ncols=2.0 must be an integer"),
        ("sensitivity", dict(panel_size=3), ValueError, r"panel_size=3 must be \(width, height\)"),
        ("sensitivity", dict(panel_size=(3, -1)), ValueError, r"two positive numbers"),
    ],
)
def test_plot_arguments_are_checked(adata, plot, kwargs, error, message):
    with pytest.raises(error, match=message):
        getattr(pl, plot)(adata, show=False, **kwargs)


# ----------------------------------------------------------------------------- common behaviour


@pytest.mark.parametrize("plot", PLOTS)
def test_save_writes_png(adata, res, plot, tmp_path):
    if plot == "param_importance":
        adata, res = _importance_ready(adata, res)
    path = tmp_path / "out" / f"{plot}.png"
    small = {  # keep it quick: two panels, a small forest
        "sensitivity": {"params": list(res.param_kinds())[:2]},
        "param_importance": {"n_estimators": 10},
    }
    out = getattr(pl, plot)(adata, show=False, save=str(path), **small.get(plot, {}))
    axes = [out] if isinstance(out, matplotlib.axes.Axes) else list(np.ravel(out))
    assert axes and all(isinstance(ax, matplotlib.axes.Axes) for ax in axes)  # returned with show=False
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_save_suffix_true_and_show(adata, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pl.optimization_history(adata, save="_sfx") is None  # show=None: shown, not returned
    assert (tmp_path / "figures" / "optimization_history_sfx.png").read_bytes()[:8] == PNG_MAGIC
    pl.optimization_history(adata, show=False, save=True)
    assert (tmp_path / "figures" / "optimization_history.png").exists()


def test_the_running_best_follows_only_the_successful_trials():
    """Results from elsewhere may give a pruned trial a loss; it is drawn, but it is no one's best."""
    records = make_records()
    pruned = next(r for r in records if r["status"] == "pruned")
    pruned["loss"] = 1.0  # below every finished trial
    ax = pl.optimization_history(make_results_adata(records), show=False)
    ok = sorted(r["loss"] for r in records if r["status"] == "ok" and np.isfinite(r["loss"]))
    running = next(line for line in ax.lines if _gid(line) == "running-best")
    assert float(np.min(running.get_ydata())) == pytest.approx(ok[0])
    assert 1.0 in _offsets(ax, "points-pruned")[:, 1] and 1.0 not in _offsets(ax, "points-ok")[:, 1]


@pytest.mark.parametrize("plot", ["trial_history", "sensitivity"])
def test_a_colormap_that_does_not_exist_is_refused_before_drawing(adata, plot):
    open_before = plt.get_fignums()
    with pytest.raises(ValueError, match=r"cmap='not-a-map' is not a matplotlib colormap"):
        getattr(pl, plot)(adata, cmap="not-a-map", show=False)
    assert plt.get_fignums() == open_before
    assert getattr(pl, plot)(adata, cmap=matplotlib.colormaps["magma"], show=False) is not None


def test_show_none_follows_scanpy_autoshow(adata):
    import scanpy as sc

    before = sc.settings.autoshow
    try:
        sc.settings.autoshow = False
        ax = pl.optimization_history(adata)  # not shown, so returned, as sc.pl.umap does
        assert isinstance(ax, matplotlib.axes.Axes) and ax.get_ylabel()
        assert pl.optimization_history(adata, show=True) is None  # an explicit show wins
        sc.settings.autoshow = True
        assert pl.optimization_history(adata) is None
    finally:
        sc.settings.autoshow = before


@pytest.mark.parametrize("plot", PLOTS)
def test_show_and_save_of_the_wrong_type_fail_before_drawing(adata, plot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plt.close("all")
    with pytest.raises(TypeError, match=r"show='no' must be True, False or None"):
        getattr(pl, plot)(adata, show="no")
    with pytest.raises(TypeError, match=r"save=3 must be True, a file name or a suffix"):
        getattr(pl, plot)(adata, show=False, save=3)
    with pytest.raises(ValueError, match=r"robust='no' must be True or False"):
        getattr(pl, plot)(adata, show=False, robust="no")
    (tmp_path / "a_file").write_text("notes")
    with pytest.raises(ValueError, match=r"save= .*a_file is a file, not a folder"):
        getattr(pl, plot)(adata, show=False, save=str(tmp_path / "a_file" / "x.png"))
    with pytest.raises(ValueError, match=r"save='.*' is a folder; pass a file name in it"):
        getattr(pl, plot)(adata, show=False, save=str(tmp_path))
    assert plt.get_fignums() == [] and not (tmp_path / "figures").exists()
    assert getattr(pl, plot)(adata, show=False, save="") is not None  # as in Scanpy: nothing saved
    assert not (tmp_path / "figures").exists()
    plt.close("all")


def test_a_save_that_fails_while_writing_closes_the_figure_it_made(adata, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    plt.close("all")
    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(OSError, match="No space left"):
        pl.optimization_history(adata, show=False, save=str(tmp_path / "h.png"))
    assert plt.get_fignums() == []
    fig, ax = plt.subplots()
    with pytest.raises(OSError, match="No space left"):
        pl.optimization_history(adata, ax=ax, show=False, save=str(tmp_path / "h.png"))
    assert plt.get_fignums() == [fig.number]  # the caller's figure stays theirs
    plt.close("all")


def test_integer_hyperparameters_get_integer_ticks():
    records = make_records()
    for record in records:  # an integer range of two values, as ("int", 1, 2) gives
        record["params"]["n_latent"] = 1 + record["trial_id"] % 2
    adata = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
    write_results(adata, KEY, build_results(records, settings=SETTINGS, searched=SEARCHED))
    assert SEARCHED["n_latent"] == "numeric"
    ax = pl.sensitivity(adata, params=["n_latent"], show=False)
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    plt.close("all")


@pytest.mark.parametrize("plot", PLOTS)
def test_missing_key(adata, plot):
    with pytest.raises(KeyError, match=r"adata.uns\['elsewhere'\] not found; run sat.tl.autotune"):
        getattr(pl, plot)(adata, key="elsewhere", show=False)


def test_public_api():
    assert pl.__all__ == ["trial_history", "sensitivity", "optimization_history", "param_importance", "pareto"]
    assert all(callable(getattr(pl, name)) for name in pl.__all__)
    assert "importances" in tl.__all__


@pytest.mark.parametrize("plot", PLOTS)
def test_docstring_documents_every_parameter(plot):
    """The shared fragments are filled in, and every parameter of the signature is documented."""
    func = getattr(pl, plot)
    doc = func.__doc__
    assert "{" not in doc and "}" not in doc, "an unfilled doc fragment"
    section = "\n" + doc.split("Parameters\n----------\n")[1].split("\n\n")[0]
    documented = re.findall(r"^(\w+)$", section, flags=re.MULTILINE)
    assert documented == list(inspect.signature(func).parameters)
    for name in ("adata", "key", "ax", "show", "save"):
        description = section.split(f"\n{name}\n", 1)[1].split("\n")[0]
        assert description.startswith("    ") and description.strip(), (plot, name)


def test_pl_reads_only_uns():
    """pl, tl.importances and _results import neither torch, nor the model, nor the search."""
    root = Path(pl.__file__).parent.parent
    modules = sorted((root / "pl").glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "_docs.py", "_utils.py", "_sensitivity.py"}
    for extra in ("_results.py", "tl/_trials_table.py", "_importances.py"):
        modules.append(root / extra)
    for path in modules:
        name = str(path.relative_to(root))
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mods = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                mods = [alias.name for alias in node.names]
            else:
                continue
            for mod in mods:
                assert not mod.startswith("torch"), (name, mod)
                assert "_vae" not in mod and "_search" not in mod, (name, mod)
