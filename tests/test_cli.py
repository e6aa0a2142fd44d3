"""The ``scanpy-autotune`` command, end to end on a real ``.h5ad``."""

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from _helpers import interrupt_when, journal_trials

import scanpy_autotune as sat
from scanpy_autotune import cli
from scanpy_autotune._results import read_results

SPACE = {"n_hidden": [32, 64], "lr": ["log", 1e-3, 1e-2], "n_layers": ["int", 1, 2],
         "dispersion": "gene"}


@pytest.fixture(scope="module")
def tuned(pbmc68k_path, tmp_path_factory):
    """One real ``tune`` run (in-process) with most options, shared by the tests that read it."""
    source = pbmc68k_path
    folder = tmp_path_factory.mktemp("cli")
    space = folder / "space.json"
    space.write_text(json.dumps(SPACE))
    out, plots, journal = folder / "out" / "tuned.h5ad", folder / "plots", folder / "search.jsonl"
    argv = [
        "tune", str(source), "-o", str(out), "--max-evals", "5", "--max-epochs", "3",
        "--n-mc", "5", "--workers", "2", "--gpus", "none", "--seed", "1",
        "--space", str(space), "--journal", str(journal), "--plots", str(plots), "--quiet",
        "--save-dir", str(folder / "model"), "--train-size", "0.7", "--test-size", "0.1",
        "--objective", "marginal_nll",  # the name the results record; the same as the default, nll
    ]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = cli.main(argv)
    return dict(code=code, out=out, plots=plots, journal=journal, stdout=stdout.getvalue(),
                source=source, model=folder / "model")


@pytest.mark.slow
def test_tune_writes_the_schema_and_the_plots(tuned):
    assert tuned["code"] == 0
    adata = ad.read_h5ad(tuned["out"])
    source = ad.read_h5ad(tuned["source"])
    assert adata.shape == source.shape and list(adata.obs_names) == list(source.obs_names)
    uns = adata.uns["autotune"]
    assert {"trials", "history", "best", "default", "params"} <= set(uns)
    results = read_results(adata)  # validates the schema
    trials = results.trials
    assert sorted(trials["trial_id"]) == list(range(5))
    assert {"trial_id", "status", "loss", "elbo_train", "elbo_heldout", "n_epochs", "best_epoch",
            "n_params", "duration_s", "device", "error", "n_hidden", "lr", "n_layers"} <= set(trials)
    assert set(trials["n_hidden"]) <= {32, 64, 128}  # 128: the default trial
    searched = trials[~trials["is_default"].astype(bool)]
    assert searched["lr"].between(1e-3, 1e-2).all() and searched["n_layers"].isin([1, 2]).all()
    assert (trials["dispersion"] == "gene").all()
    best = uns["best"]
    assert adata.obsm["X_autotune"].shape == (adata.n_obs, int(best["params"].get("n_latent", 10)))  # 10: not searched
    assert np.isfinite(adata.obsm["X_autotune"]).all()
    assert uns["params"]["max_evals"] == 5 and uns["params"]["seed"] == 1
    assert uns["params"]["objective"] == "marginal_nll"
    assert uns["params"]["tpe_startup_trials"] == 4  # at least 4 random trials: TPE models from trial 4
    pngs = sorted(p.name for p in tuned["plots"].iterdir())
    expected = {f"{name}.png" for name in cli.PLOTS}
    ok = int((trials["status"] == "ok").sum())
    if ok < 5:  # param_importance needs five successful trials; it is skipped, and the summary says so
        expected.discard("param_importance.png")
        assert f"to {tuned['plots']}; not param_importance: " in tuned["stdout"]
    else:
        assert f"wrote {len(expected) - 1} plot(s) to {tuned['plots']}\n" in tuned["stdout"]
    expected.discard("pareto.png")  # pareto needs integration scores (--labels-key); it is skipped with a warning
    assert set(pngs) == expected
    for png in pngs:
        assert (tuned["plots"] / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best configuration" in tuned["stdout"] and "gain over the default" in tuned["stdout"]
    journal = [json.loads(line) for line in tuned["journal"].read_text().splitlines()]
    assert sum(line["kind"] == "trial" for line in journal) == 5
    # --train-size, --test-size and --save-dir reach the search
    assert uns["params"]["train_size"] == 0.7 and uns["params"]["test_size"] == 0.1
    split = adata.obs["autotune_split"].value_counts()
    assert split["test"] == pytest.approx(0.1 * adata.n_obs, abs=2)
    model = sat.Model.load(tuned["model"])
    np.testing.assert_allclose(model.latent(adata), adata.obsm["X_autotune"], rtol=1e-4, atol=1e-5)
    assert f"saved the best model to {tuned['model']}" in tuned["stdout"]


@pytest.mark.slow
def test_tune_again_on_the_journal_resumes(tuned, capsys):
    """All trials are in the journal: nothing is re-run, the output is written again."""
    out = tuned["out"].with_name("again.h5ad")
    argv = [
        "tune", str(tuned["source"]), "-o", str(out), "--max-evals", "5", "--max-epochs", "3",
        "--n-mc", "5", "--workers", "1", "--gpus", "none", "--seed", "1",
        "--space", str(tuned["out"].parent.parent / "space.json"),
        "--journal", str(tuned["journal"]), "--quiet", "--train-size", "0.7", "--test-size", "0.1",
    ]
    assert cli.main(argv) == 0
    assert f"5 trials (5 resumed from the journal {tuned['journal']}): " in capsys.readouterr().out
    first = ad.read_h5ad(tuned["out"]).uns["autotune"]["trials"]
    again = ad.read_h5ad(out).uns["autotune"]["trials"]
    np.testing.assert_allclose(first["loss"], again["loss"])


@pytest.mark.slow
def test_bad_input_file_is_one_line_and_exit_2(tmp_path):
    """In a real subprocess: no traceback, one line on stderr, exit code 2."""
    bad = tmp_path / "notes.h5ad"
    bad.write_text("this is not an h5ad file\n")
    run = subprocess.run(
        [sys.executable, "-m", "scanpy_autotune.cli", "tune", str(bad), "-o", str(tmp_path / "o.h5ad")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr
    assert lines[0].startswith("scanpy-autotune: error: ") and "notes.h5ad" in lines[0]
    assert not (tmp_path / "o.h5ad").exists()


@pytest.mark.slow
def test_sigterm_to_the_process_group_writes_the_finished_trials_and_exits_143(pbmc68k_path, tmp_path):
    """A batch system's time limit: SIGTERM to the command and its workers, as `kill -TERM -PGID` sends it.

    The workers ignore it (ended by it, their trials would be recorded as failed); the command stops
    them, writes the finished trials to -o, and exits 143.
    """
    out, journal = tmp_path / "tuned.h5ad", tmp_path / "search.jsonl"
    command = subprocess.Popen(
        [sys.executable, "-m", "scanpy_autotune.cli", "tune", str(pbmc68k_path), "-o", str(out),
         "--journal", str(journal), "--max-evals", "200", "--max-epochs", "2", "--n-mc", "2",
         "--workers", "2", "--gpus", "none", "--patience", "none", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and command.poll() is None:
            if journal.exists() and len(journal_trials(journal)) >= 3:
                break
            time.sleep(0.1)
        assert command.poll() is None, command.communicate()[1]
        os.killpg(command.pid, signal.SIGTERM)
        _, stderr = command.communicate(timeout=120)
    finally:
        if command.poll() is None:
            os.killpg(command.pid, signal.SIGKILL)
    assert command.returncode == 143, stderr
    assert "terminated (SIGTERM); wrote" in stderr and "Traceback" not in stderr
    kept = journal_trials(journal)
    assert 3 <= len(kept) < 200
    assert {t["status"] for t in kept} == {"ok"}  # no worker was ended by the signal
    trials = ad.read_h5ad(out).uns["autotune"]["trials"]
    assert sorted(trials["trial_id"]) == sorted(t["trial_id"] for t in kept)
    with pytest.raises(ProcessLookupError):  # no worker left behind in the group
        for _ in range(50):
            os.killpg(command.pid, 0)
            time.sleep(0.1)


def _negative_counts(path, cortex):
    sub = cortex[:50].copy()
    sub.X = sp.csr_matrix(sub.X.multiply(-1))
    sub.write_h5ad(path)


@pytest.mark.slow
def test_key_added_keeps_an_earlier_search_and_no_default_leaves_out_the_reference(tuned, tmp_path, capsys):
    out, plots = tmp_path / "twice.h5ad", tmp_path / "plots"
    code = cli.main(["tune", str(tuned["out"]), "-o", str(out), "--key-added", "second",
                     "--no-default", "--max-evals", "2", "--max-epochs", "2", "--n-mc", "2",
                     "--workers", "1", "--gpus", "none", "--quiet", "--plots", str(plots)])
    assert code == 0
    adata, earlier = ad.read_h5ad(out), ad.read_h5ad(tuned["out"])
    assert adata.uns["autotune"]["trials"].equals(earlier.uns["autotune"]["trials"])
    np.testing.assert_array_equal(adata.obsm["X_autotune"], earlier.obsm["X_autotune"])
    second = read_results(adata, key="second").trials
    assert len(second) == 2 and not second["is_default"].astype(bool).any()
    assert "default" not in adata.uns["second"]
    assert adata.obsm["X_second"].shape[0] == adata.n_obs
    text = capsys.readouterr().out
    assert "best configuration" in text and "the default configuration was not evaluated" in text
    assert (plots / "trial_history.png").is_file()


def test_an_output_holding_other_searches_the_input_lacks_is_refused_before_the_search(cortex, tmp_path, capsys):
    """Probe 23: writing the input with a second search over an -o that held the first replaced it."""
    from test_results import make_results_adata

    path, out = tmp_path / "in.h5ad", tmp_path / "earlier.h5ad"
    cortex[:50].copy().write_h5ad(path)
    earlier = make_results_adata()
    earlier.write_h5ad(out)
    before = out.read_bytes()
    code = cli.main(["tune", str(path), "-o", str(out), "--key-added", "second", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"-o {out} holds the search result(s) ['autotune'], which {path} does not" in err
    assert f"scanpy-autotune tune {out} -o {out} --key-added second" in err
    assert out.read_bytes() == before
    assert cli._output.searches_in(out) == ["autotune"] and cli._output.searches_in(path) == []


@pytest.mark.slow
def test_a_timeout_before_any_trial_finished_is_no_result_and_writes_nothing(cortex, tmp_path, capsys):
    """Probe 23: it ended as bad input (2), in Python's words (adata, max_epochs)."""
    path, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    cortex[:200].copy().write_h5ad(path)
    code = cli.main(["tune", str(path), "-o", str(out), "--timeout", "1", "--max-epochs", "100000",
                     "--workers", "1", "--gpus", "none", "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_NO_RESULT == 1 and not out.exists()
    assert err.strip() == ("scanpy-autotune: error: --timeout 1 s passed before any trial finished; nothing was "
                           "written. Allow a longer --timeout or a smaller --max-epochs.")


def test_python_m_scanpy_autotune_is_the_command(monkeypatch, capsys):
    """Probe 23: ``python -m scanpy_autotune --help`` said there was no __main__ module."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["scanpy_autotune", "--help"])
    with pytest.raises(SystemExit) as done:
        runpy.run_module("scanpy_autotune", run_name="__main__")
    assert done.value.code == 0 and "scanpy-autotune" in capsys.readouterr().out


def _unwritable_folder(tmp_path):
    """A folder no file can be created in, also for the superuser: /proc on Linux, else a read-only one."""
    if Path("/proc/self").is_dir():
        return Path("/proc")
    if os.geteuid() == 0:  # permissions do not stop the superuser, and there is no /proc
        pytest.skip("no folder the superuser cannot write into on this system")
    folder = tmp_path.parent / f"{tmp_path.name}-read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


def test_an_output_that_cannot_be_created_is_refused_before_the_search(cortex, tmp_path, capsys):
    """Permissions alone do not tell (root passes them for /proc): the check tries an empty file there."""
    path = tmp_path / "in.h5ad"
    cortex[:50].copy().write_h5ad(path)
    folder = _unwritable_folder(tmp_path)
    for flag, target in (("-o", folder / "x" / "out.h5ad"), ("--journal", folder / "search.jsonl")):
        out = ["-o", str(tmp_path / "out.h5ad")] if flag != "-o" else []
        code = cli.main(["tune", str(path), flag, str(target), *out, "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and f"the folder {folder} is not writable" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.h5ad").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad"]


@pytest.mark.parametrize(
    "make, extra, message",
    [
        ("negative", [], "negative"),
        ("missing", [], "no such file"),
        ("ok", ["--layer", "counts"], "--layer 'counts' is not in adata.layers"),  # in its words
        ("no_x", [], "adata.X is None (no matrix); pass --layer with the layer that holds raw counts"),
        ("ok", ["--space", "SPACE"], "Unknown hyperparameter"),
        ("ok", ["--space", "NOTJSON"], "not valid JSON"),
        ("ok", ["--max-evals", "0"], "--max-evals"),
        ("ok", ["--gpus", "lots"], "--gpus"),
        ("ok", ["--shared-input"], "--shared-input needs --scheduler"),
        ("ok", ["--key-added", "a/b"], "--key-added 'a/b'"),
        ("ok", ["--train-size", "0"], "--train-size: '0' must be a share of the cells, in (0, 1)"),
        ("ok", ["--test-size", "1"], "--test-size: '1' must be a share of the cells, in [0, 1)"),
    ],
)
def test_bad_input_exits_2_with_one_line(cortex, tmp_path, capsys, make, extra, message):
    path = tmp_path / "in.h5ad"
    if make == "negative":
        _negative_counts(path, cortex)
    elif make == "ok":
        cortex[:50].copy().write_h5ad(path)
    elif make == "no_x":
        counts = cortex[:50].copy()
        counts.layers["counts"], counts.X = counts.X, None
        counts.write_h5ad(path)
    (tmp_path / "space.json").write_text(json.dumps({"n_hiden": [1, 2]}))
    (tmp_path / "bad.json").write_text("{n_hidden: [1, 2]")
    extra = [
        str(tmp_path / "space.json") if a == "SPACE" else str(tmp_path / "bad.json") if a == "NOTJSON" else a
        for a in extra
    ]
    code = cli.main(["tune", str(path), "-o", str(tmp_path / "out.h5ad"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and message in lines[0]
    assert lines[0].startswith("scanpy-autotune: error:")
    assert not (tmp_path / "out.h5ad").exists()


def test_help_explains_every_option(capsys):
    assert cli.main(["tune", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ["IN.h5ad", "-o", "--layer", "--batch-key", "--max-evals", "--max-epochs",
                   "--workers", "--gpus", "--trials-per-gpu", "--scheduler", "--journal", "--seed",
                   "--space", "--plots", "--quiet", "--verbose", "--pruner", "--timeout", "--n-mc",
                   "--key-added", "--no-default", "--save-dir", "--patience", "--startup"]:
        assert option in text, option
    assert cli.main(["demo", "--help"]) == 0
    assert "--max-evals" in capsys.readouterr().out
    assert cli.main([]) == 2


def test_the_pruner_option_offers_every_pruner_of_the_search():
    # the command line imports no _search module, so it names them itself
    from scanpy_autotune._search._pruner._make import PRUNERS

    (action,) = [a for a in cli.build_parser()._subparsers._group_actions[0].choices["tune"]._actions
                 if a.dest == "pruner"]
    assert set(action.choices) == {"auto", "none", *PRUNERS}


def test_space_json_shorthand():
    space = cli.space_from_json({
        "n_hidden": [64, 128], "lr": ["log", 1e-4, 1e-2], "n_layers": ["int", 1, 3],
        "dropout_rate": ["uniform", 0.1, 0.5], "reconstruction_loss": ["choice", ["zinb", "nb"]],
        "dispersion": "gene",
    })
    assert space["n_hidden"] == [64, 128] and space["dispersion"] == "gene"
    assert space["lr"] == ("log", 1e-4, 1e-2) and space["n_layers"] == ("int", 1, 3)
    assert space["dropout_rate"] == ("uniform", 0.1, 0.5)
    assert space["reconstruction_loss"] == ("choice", ["zinb", "nb"])
    with pytest.raises(ValueError, match="JSON object"):
        cli.space_from_json([1, 2])


def test_parse_gpus():
    assert cli.parse_gpus("all") == "all" and cli.parse_gpus("none") is None
    assert cli.parse_gpus("2") == 2 and cli.parse_gpus("0,2") == [0, 2] and cli.parse_gpus("1,") == [1]
    with pytest.raises(argparse.ArgumentTypeError, match="names a GPU more than once"):
        cli.parse_gpus("0,0")


@pytest.mark.slow
def test_ctrl_c_writes_the_finished_trials_and_exits_130(tuned, tmp_path, monkeypatch, capsys):
    finished = ad.read_h5ad(tuned["out"]).uns["autotune"]

    def interrupted(adata, **kwargs):
        adata.uns["autotune"] = finished  # what autotune writes before re-raising Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(sat.tl, "autotune", interrupted)
    out = tmp_path / "partial.h5ad"
    code = cli.main(["tune", str(tuned["source"]), "-o", str(out), "--quiet"])
    assert code == 130
    assert len(ad.read_h5ad(out).uns["autotune"]["trials"]) == 5
    assert "interrupted" in capsys.readouterr().err


def test_ctrl_c_before_a_trial_was_stored_points_to_the_journal(cortex, tmp_path, monkeypatch, capsys):
    def interrupted(adata, **kwargs):
        raise KeyboardInterrupt  # as autotune re-raises a Ctrl-C that came before any stored trial

    monkeypatch.setattr(sat.tl, "autotune", interrupted)
    path, out, journal = tmp_path / "in.h5ad", tmp_path / "out.h5ad", tmp_path / "search.jsonl"
    cortex[:50].copy().write_h5ad(path)
    assert cli.main(["tune", str(path), "-o", str(out), "--journal", str(journal), "--quiet"]) == 130
    assert capsys.readouterr().err.strip() == (
        f"scanpy-autotune: interrupted before a finished trial was stored; nothing written; the journal {journal} "
        "keeps every finished trial: the same command resumes"
    )
    assert not out.exists()


def test_a_search_without_a_successful_trial_exits_1_and_writes_nothing(cortex, tmp_path, monkeypatch, capsys):
    def no_success(adata, **kwargs):
        summary = "none of the 2 trials succeeded (2 fail), so there is no result to store."
        raise sat.tl.NoTrialSucceededError(f"{summary} adata is unchanged.", None, summary)

    monkeypatch.setattr(sat.tl, "autotune", no_success)
    path, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    cortex[:50].copy().write_h5ad(path)
    assert cli.main(["tune", str(path), "-o", str(out), "--quiet"]) == cli.EXIT_NO_RESULT == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["scanpy-autotune: error: none of the 2 trials succeeded (2 fail), so there is no result "
                   "to store. Nothing was written."]
    assert not out.exists()


@pytest.mark.slow
def test_a_failed_cut_short_write_is_said_even_when_asked_again_to_stop(tuned, tmp_path, monkeypatch, capsys):
    """Probe 21: a second Ctrl-C held while the cut-short -o was written hid the write's own error."""
    finished = ad.read_h5ad(tuned["out"]).uns["autotune"]

    def interrupted(adata, **kwargs):
        adata.uns["autotune"] = finished
        raise KeyboardInterrupt

    def full_disk(adata, path):
        signal.raise_signal(signal.SIGINT)  # the second Ctrl-C, held while the file is written
        raise OSError(28, "No space left on device", str(path))

    signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(sat.tl, "autotune", interrupted)
    monkeypatch.setattr(cli._main, "_write_h5ad", full_disk)
    out = tmp_path / "partial.h5ad"
    assert cli.main(["tune", str(tuned["source"]), "-o", str(out), "--quiet"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "No space left on device" in err and "wrote" not in err


@pytest.mark.slow
def test_ctrl_c_never_replaces_a_finished_search_in_o(tuned, tmp_path, capsys):
    """-o holds an earlier run's finished search: a run cut short writes its trials beside it."""
    import shutil

    out, journal = tmp_path / "tuned.h5ad", tmp_path / "search.jsonl"
    shutil.copy(tuned["out"], out)
    finished = ad.read_h5ad(out).uns["autotune"]
    watcher = interrupt_when(journal, 2)
    code = cli.main(["tune", str(tuned["source"]), "-o", str(out), "--journal", str(journal),
                     "--max-evals", "40", "--max-epochs", "3", "--n-mc", "2", "--quiet"])
    watcher.join()
    assert code == 130
    kept = ad.read_h5ad(out).uns["autotune"]
    assert kept["params"]["stop_reason"] == finished["params"]["stop_reason"]
    assert kept["trials"].equals(finished["trials"])
    partial = ad.read_h5ad(tmp_path / "tuned.interrupted.h5ad").uns["autotune"]
    assert partial["params"]["stop_reason"] == "interrupted (Ctrl-C)"
    assert 2 <= len(partial["trials"]) < 40
    err = capsys.readouterr().err
    assert f"to {tmp_path / 'tuned.interrupted.h5ad'} (beside the finished search kept in {out})" in err

    # the part it wrote is no finished search: the next cut-short run replaces it
    assert cli._output._cut_short_output(tmp_path / "tuned.interrupted.h5ad") == tmp_path / "tuned.interrupted.h5ad"


@pytest.mark.slow
def test_demo_prints_the_best_configuration_and_its_gain(capsys):
    code = cli.main(["demo", "--max-evals", "2", "--max-epochs", "1", "--n-mc", "2",
                     "--workers", "2", "--gpus", "none", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "pbmc68k_counts (700 cells x 765 genes)" in out
    assert "best configuration (trial" in out
    assert "gain over the default" in out and "%" in out
