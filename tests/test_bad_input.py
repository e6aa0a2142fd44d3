"""Everything a search writes and takes is checked before the first trial; nothing a user had is changed.

Each case of the second fault probe (issue "Nothing lost, nothing overwritten")
has a test here, named by the class of fault it stands for. None of these
trains a model: they must fail before any work.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import os
import re
import stat
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import scanpy_autotune as sat
from scanpy_autotune import cli
from scanpy_autotune._search import objective_identity
from scanpy_autotune._search._journal import Journal
from scanpy_autotune._vae import _model
from scanpy_autotune.tl import JournalLockedError

FAST = dict(max_evals=2, max_epochs=2, n_mc=2, progress=False, n_workers=1, gpus=None)


@pytest.fixture
def tiny() -> ad.AnnData:
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(60, 30)).astype(np.float32)
    counts[:, 0] += 1  # no empty cell
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.obs_names = [f"cell{i}" for i in range(60)]
    adata.var_names = [f"gene{j}" for j in range(30)]
    adata.obs["plate"] = pd.Categorical(["a", "b", "c"] * 20)
    return adata


def _snapshot(adata: ad.AnnData) -> tuple:
    return (set(adata.uns), list(adata.obs.columns), set(adata.obsm), adata.X.sum())


def _refused(adata, match, error=ValueError, **kwargs):
    before = _snapshot(adata)
    with pytest.raises(error, match=match):
        sat.tl.autotune(adata, **{**FAST, **kwargs})
    assert _snapshot(adata) == before


# ---------------------------------------------------------------------------
# output locations: checked before the search, never someone else's file
# ---------------------------------------------------------------------------


def test_save_dir_that_is_a_file_fails_before_the_search(tiny, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    _refused(tiny, r"save_dir= .*notes.txt is a file", save_dir=notes)
    assert notes.read_text() == "my notes"


def test_save_dir_holding_other_files_is_refused(tiny, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "figure.png").write_bytes(b"png")
    _refused(tiny, r"holds files that are not a saved model \(figure.png\)", save_dir=folder)
    assert [p.name for p in folder.iterdir()] == ["figure.png"]


def test_save_dir_below_a_file_is_refused(tiny, tmp_path):
    (tmp_path / "file").write_text("x")
    _refused(tiny, r"is a file, not a folder", save_dir=tmp_path / "file" / "model")


@pytest.mark.parametrize("content", ["my lab notes", "[1, 2, 3]", '{"a": 1}\n{"b": 2}\n', "line\nnotes\n"])
def test_a_file_that_is_not_a_journal_is_never_repaired_or_replaced(tiny, tmp_path, content):
    path = tmp_path / "notes.txt"
    path.write_text(content)
    _refused(tiny, r"is not a scanpy-autotune journal .*left untouched", journal=path)
    assert path.read_text() == content


def test_a_journal_in_use_by_another_search_is_refused_naming_the_process(tiny, tmp_path):
    path = tmp_path / "search.jsonl"
    holder, _ = Journal.open(path, {"seed": 0}, lock=True)  # another search holds it
    link = tmp_path / "link.jsonl"
    link.symlink_to(path)
    try:
        _refused(tiny, rf"in use by another search \(process {os.getpid()} on ", JournalLockedError, journal=path)
        # probe 20: another name for the same file locked <name>.lock, another file
        _refused(tiny, rf"{path} is in use by another search", JournalLockedError, journal=link)
    finally:
        holder.close()
    again, _ = Journal.open(path, {"seed": 0}, lock=True)  # free once the holder is done
    again.close()


def test_journal_lines_with_wrong_types_name_the_file_and_line(tmp_path):
    path = tmp_path / "j.jsonl"
    journal, _ = Journal.open(path, {"seed": 0})
    journal.append({"trial_id": 0, "status": "ok", "loss": 1.0, "params": {"n_hidden": 64}})
    journal.append({"trial_id": 1, "status": "ok", "loss": "abc", "params": {}})
    from scanpy_autotune._record import TrialRecord

    with pytest.raises(ValueError, match=r"j.jsonl has a bad trial at line 3: loss='abc' must be a number"):
        Journal.open(path, {"seed": 0}, decode=TrialRecord.from_json)
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"kind": "trial", "trial_id": 1, "status": "ok", "loss": 2.0})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 3: the trial record has no 'params'"):
        Journal.open(path, {"seed": 0}, decode=TrialRecord.from_json)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("a/b", r"contains '/', which \.h5ad files cannot store in a key .* e\.g\. 'a_b'"),
        ("", "must be a non-empty string"),
        ("  ", "must be a non-empty string"),
        (3, "must be a non-empty string"),
        (".", "names the enclosing group"),
        ("..", "names the enclosing group"),
        ("x\x00y", "contains a NUL character"),
    ],
)
def test_keys_that_h5ad_cannot_store_are_refused(tiny, key, why):
    _refused(tiny, f"key_added=.*{why}", key_added=key)


# ---------------------------------------------------------------------------
# arguments: no silent coercion
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train_size="0.5"), r"train_size='0.5' must be a number in \(0, 1\)"),
        (dict(test_size=True), r"test_size=True must be a number"),
        (dict(gpus="bogus"), r"gpus='bogus' is not valid; use 'all'"),
        (dict(gpus=[0, "1"]), r"gpus=\[0, '1'\] is not valid"),
        (dict(timeout=True), r"timeout=True must be a number"),
        (dict(timeout=-1), r"timeout=-1 must be a number in \(0, inf\)"),
        (dict(max_evals=2.0), r"max_evals=2.0 must be an integer in \[1, 2147483647\]"),
        (dict(seed=2**64), r"seed=18446744073709551616 must be an integer in \[0, 4294967295\]"),
        (dict(max_evals=2**70), r"max_evals=\d+ must be an integer in \[1, 2147483647\]"),
        (dict(seed="0"), r"seed='0' must be an integer"),
        (dict(n_workers=True), r"n_workers=True must be an integer"),
        (dict(n_workers=2.0, max_epochs=12), r"n_workers=2.0 must be an integer"),
        (dict(space={"n_hidden": [64, 128], "n_layers": True}), r"n_layers=True is not a number"),
        (dict(space={"n_hidden": [64, "128"]}), r"n_hidden='128' is not a number"),
        (dict(space={"n_hidden": [64, 128], "early_stopping": 1}), r"early_stopping=1 is not valid"),
        (dict(client=object()), r"client= is for backend='dask'"),
        (dict(space={"n_hidden": [64, 128], "n_layers": 2.0}), r"n_layers=2.0 must be an integer; a float"),
        (dict(space={"n_hidden": [64.0, 128]}), r"n_hidden=64.0 must be an integer; a float"),
        (dict(space={"n_hidden": [64, 128], "batch_size": np.float64(128)}), r"batch_size=.*128.* must be an integer"),
        (dict(score_cells="foo"), r"score_cells='foo' is not valid; use one of \['heldout', 'all'\]"),
        (dict(score_cells="all"), r"score_cells='all' chooses the cells .* pass labels_key="),
        (dict(pruner="asha", pruner_kwargs=[]), r"pruner_kwargs=\[\] must be a dict"),
        (dict(journal=""), r"journal= is an empty path; pass a file path"),
        (dict(save_dir=""), r"save_dir= is an empty path; pass a folder for the model"),
        (dict(include_default="no"), r"include_default='no' must be True or False"),
        (dict(copy=1), r"copy=1 must be True or False"),
        (dict(refit="yes"), r"refit='yes' must be True or False"),
    ],
)
def test_arguments_are_never_coerced(tiny, kwargs, message, caplog):
    kwargs = {**FAST, **kwargs}
    before = _snapshot(tiny)
    with caplog.at_level(logging.INFO, logger="scanpy_autotune"), pytest.raises(ValueError, match=message):
        sat.tl.autotune(tiny, **kwargs)
    assert _snapshot(tiny) == before
    assert not caplog.records  # refused before the search says anything (what it would prune, say)


def test_a_view_of_a_backed_anndata_is_refused_before_any_trial(tiny, tmp_path):
    path = tmp_path / "tiny.h5ad"
    tiny.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(ValueError, match=r"a view of a backed AnnData .* adata\[\.\.\.\]\.to_memory\(\)"):
        sat.tl.autotune(backed[:40], save_dir=tmp_path / "model", journal=tmp_path / "j.jsonl", **FAST)
    assert not (tmp_path / "model").exists() and not (tmp_path / "j.jsonl").exists()
    backed.file.close()


@pytest.mark.slow
def test_a_view_of_a_backed_anndata_gives_its_results_with_copy(tiny, tmp_path):
    path = tmp_path / "tiny.h5ad"
    tiny.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    result = sat.tl.autotune(backed[:40], copy=True, **FAST)
    assert result.n_obs == 40 and not result.isbacked and "autotune" in result.uns
    assert list(result.obs_names) == list(tiny.obs_names[:40])
    backed.file.close()


def test_key_added_never_replaces_another_tool_s_results(tiny):
    import scanpy as sc

    pca = tiny.copy()
    sc.pp.log1p(pca)
    sc.pp.pca(pca, n_comps=5)
    pca.X = tiny.X.copy()
    _refused(pca, r"key_added='pca': adata.uns\['pca'\] already holds something that is not a search result",
             key_added="pca")
    assert pca.obsm["X_pca"].shape == (tiny.n_obs, 5) and "variance_ratio" in pca.uns["pca"]
    only_obsm = tiny.copy()
    only_obsm.obsm["X_mine"] = np.zeros((tiny.n_obs, 2))
    _refused(only_obsm, r"adata.obsm\['X_mine'\] already hold.* as ad.concat drops it.* or delete it "
             r"\(del adata.obsm\['X_mine'\]\) if it may go", key_added="mine")
    other_split = tiny.copy()
    other_split.obs["mine_split"] = "fold1"
    _refused(other_split, r"adata.obs\['mine_split'\] already hold", key_added="mine")
    own_split = tiny.copy()  # a user's split of the same names is still the user's
    own_split.obs["cv_split"] = np.where(np.arange(tiny.n_obs) % 5 == 0, "test", "train")
    _refused(own_split, r"adata.obs\['cv_split'\] already hold", key_added="cv")


@pytest.mark.slow
def test_key_added_replaces_an_earlier_search(tiny):
    sat.tl.autotune(tiny, **FAST)
    first = tiny.uns["autotune"]["params"]["seed"]
    sat.tl.autotune(tiny, **{**FAST, "seed": 5})
    assert first == 0 and tiny.uns["autotune"]["params"]["seed"] == 5
    # an earlier search whose uns is gone (ad.concat drops uns): its latent is refused as anything
    # could be there; deleting it, as the message says, lets the search run again
    del tiny.uns["autotune"]
    _refused(tiny, r"del adata.obsm\['X_autotune'\]", seed=6)
    del tiny.obsm["X_autotune"]
    sat.tl.autotune(tiny, **{**FAST, "seed": 6})
    assert tiny.uns["autotune"]["params"]["seed"] == 6 and "X_autotune" in tiny.obsm


@pytest.mark.slow
def test_recorded_spellings_of_the_pruner_and_objective_are_taken_back(tiny):
    sat.tl.autotune(tiny, pruner="none", objective="marginal_nll", **FAST)
    params = tiny.uns["autotune"]["params"]
    assert params["pruner"] == "none" and params["objective"] == "marginal_nll"
    sat.tl.autotune(tiny, pruner=params["pruner"], objective=params["objective"], **{**FAST, "seed": 1})


def test_cell_and_gene_mistakes_say_what_differs(tiny):
    model = sat.Model.fit(tiny, max_epochs=1)
    renamed = tiny.copy()
    renamed.var_names = [f"other{i}" if i < 3 else name for i, name in enumerate(tiny.var_names)]
    with pytest.raises(ValueError, match=r"3 of the model's genes missing, e.g. '.*'; 3 other genes, e.g. 'other0'"):
        model.latent(renamed)
    mask = pd.Series([True, np.nan] * (tiny.n_obs // 2), index=tiny.obs_names, dtype=object)
    with pytest.raises(ValueError, match=r"cells= is a True/False mask with 30 missing value\(s\); fill them"):
        model.elbo(tiny, cells=mask)
    nullable = pd.Series([True, pd.NA] * (tiny.n_obs // 2), index=tiny.obs_names, dtype="boolean")
    with pytest.raises(ValueError, match=r"True/False mask with 30 missing"):
        model.elbo(tiny, cells=nullable)
    filled = nullable.fillna(False)
    assert len(model.elbo(tiny, cells=filled, per_cell=True)) == 30
    # one cell by name; a name that is no cell says what cells= takes
    one = model.elbo(tiny, cells=tiny.obs_names[3], per_cell=True)
    assert list(one.index) == [tiny.obs_names[3]]
    with pytest.raises(ValueError, match=r"cells='nobody' is neither 'all', one of .* nor a cell of adata"):
        model.elbo(tiny, cells="nobody")
    with pytest.raises(ValueError, match=r"per_cell='yes' must be True or False"):
        model.elbo(tiny, per_cell="yes")
    # denoised expression: in adata's gene order, and no library that overflows float32
    reversed_genes = tiny[:, tiny.var_names[::-1]].copy()
    denoised = model.normalized_expression(reversed_genes, 1e4)
    assert list(denoised.columns) == list(reversed_genes.var_names)
    pd.testing.assert_frame_equal(denoised[tiny.var_names], model.normalized_expression(tiny, 1e4))
    with pytest.raises(ValueError, match=r"library_size=1e\+308 must be a number in \(0, 3.40"):
        model.normalized_expression(tiny, 1e308)
    batch = tiny.copy()
    batch.obs["batch"] = pd.Categorical(["a", "b"] * (tiny.n_obs // 2))
    batch.obs.loc[batch.obs_names[0], "batch"] = np.nan
    _refused(batch, r"adata.obs\['batch'\] has 1 missing value\(s\); give every cell a batch", batch_key="batch")


@pytest.mark.slow
def test_a_journal_of_reordered_cells_says_that_order_matters(tiny, tmp_path):
    journal = tmp_path / "j.jsonl"
    sat.tl.autotune(tiny, journal=journal, **FAST)
    reordered = tiny[::-1].copy()
    _refused(reordered, r"the same cells or genes reordered or subset, another layer or another batch_key are "
             r"other data", journal=journal)
    batched = tiny.copy()  # probe 20: the same data with a batch_key read as a change of data; the hint says so
    batched.obs["batch"] = pd.Categorical(["a", "b"] * (tiny.n_obs // 2))
    _refused(batched, r"data: journal '\w+', now '\w+'.*or another batch_key are other data",
             journal=journal, batch_key="batch")


def test_model_fit_never_takes_a_float_for_an_integer(tiny):
    with pytest.raises(ValueError, match=r"n_layers=2.0 must be an integer; a float is not taken for one"):
        sat.Model.fit(tiny, n_layers=2.0, max_epochs=1)
    # hyperopt draws integer ranges as floats: inside the search a whole float still counts
    from scanpy_autotune._vae import HYPERPARAMETERS

    assert HYPERPARAMETERS["n_layers"].check("n_layers", 2.0) == 2


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda X: X.toarray().astype(np.complex64) + 1j, r"complex values"),
        (lambda X: X.toarray() > 0, r"is boolean \(present/absent\), not counts"),
        (lambda X: sp.csr_matrix(X > 0), r"is boolean"),
    ],
)
def test_counts_of_the_wrong_kind_are_refused(tiny, make, message):
    tiny.X = make(tiny.X)
    _refused(tiny, message)


def test_a_continuous_batch_column_is_refused(tiny):
    tiny.obs["size"] = np.random.default_rng(1).normal(size=tiny.n_obs)
    _refused(tiny, r"adata.obs\['size'\] holds non-integer numbers", batch_key="size")
    tiny.obs["barcode"] = tiny.obs_names.astype(str)
    _refused(tiny, r"has 60 distinct values for 60 cells", batch_key="barcode")
    tiny.obs["plate_number"] = np.repeat([1.0, 2.0, 3.0], 20)  # integer-valued floats are labels
    from scanpy_autotune._vae._data import extract_counts

    assert extract_counts(tiny, batch_key="plate_number").batch_categories == ["1.0", "2.0", "3.0"]


# ---------------------------------------------------------------------------
# a custom objective is recognised by its code, not its name
# ---------------------------------------------------------------------------


def test_objective_identity_follows_the_code():
    def obj(model, heldout):
        return 1.0

    first = objective_identity(obj)

    def obj(model, heldout):  # noqa: F811 - redefined on purpose, as in a notebook
        return 2.0

    assert objective_identity(obj) != first
    assert objective_identity(obj) == objective_identity(obj)
    assert objective_identity(obj).startswith("test_objective_identity_follows_the_code.<locals>.obj sha256:")
    obj.version = "2"
    assert objective_identity(obj).endswith("version:2")
    assert objective_identity(None) == "marginal_nll"
    from scanpy_autotune._search._search import _checked_objective

    # the recorded name and the command line's (probe 19) are the default objective
    for name in ("marginal_nll", "nll"):
        assert _checked_objective(name, labelled=False, batch_key=None) is None


# ---------------------------------------------------------------------------
# Model.load checks config.json before building anything
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    rng = np.random.default_rng(0)
    adata = ad.AnnData(sp.csr_matrix(rng.poisson(2.0, size=(40, 12)).astype(np.float32) + 1))
    folder = tmp_path_factory.mktemp("model") / "model"
    sat.Model.fit(adata, max_epochs=1, n_hidden=8, n_latent=2, device="cpu").save(folder)
    return folder


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["hyperparameters"].update(n_layers="1"), r"hyperparameters: n_layers='1' is not a number"),
        (lambda c: c["hyperparameters"].update(n_hidden=1_000_000), r"n_hidden=1000000 is out of range"),
        (lambda c: c["hyperparameters"].update(learning_rate=0.1), r"Unknown hyperparameter\(s\) \['learning_rate'\]"),
        (lambda c: c.update(split=5), r"'split' must map some of"),
        (lambda c: c.update(colour="blue"), r"unknown entry \['colour'\]"),
        (lambda c: c.pop("var_names"), r"missing \['var_names'\]"),
        (lambda c: c["hyperparameters"].pop("lr"), r"'hyperparameters' lacks \['lr'\]"),
        (lambda c: c["hyperparameters"].update(max_kl_weight=-1.0), r"max_kl_weight=-1.0 is out of range"),
        (lambda c: c.update(var_names=[1, 2]), r"'var_names' must be a list of names"),
        (lambda c: c["history"].update(stopped_by="magic"), r"'stopped_by' must be one of"),
    ],
)
def test_model_load_checks_the_config_before_building(saved_model, tmp_path, monkeypatch, edit, message):
    folder = tmp_path / "edited"
    folder.mkdir()
    config = json.loads((saved_model / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "weights.pt").write_bytes((saved_model / "weights.pt").read_bytes())

    def never(*args, **kwargs):
        raise AssertionError("a network was built from a config that is not valid")

    monkeypatch.setattr(_model, "VAE", never)
    with pytest.raises(ValueError, match=message):
        sat.Model.load(folder)


def test_model_saved_before_max_kl_weight_loads_with_the_weight_it_trained_with(saved_model, tmp_path):
    folder = tmp_path / "older"
    folder.mkdir()
    config = json.loads((saved_model / "config.json").read_text())
    del config["hyperparameters"]["max_kl_weight"]  # as saved before the hyperparameter existed
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "weights.pt").write_bytes((saved_model / "weights.pt").read_bytes())
    loaded = sat.Model.load(folder)
    assert loaded.hyperparameters["max_kl_weight"] == 1.0
    assert loaded.hyperparameters == sat.Model.load(saved_model).hyperparameters


def test_model_load_refuses_weights_that_do_not_match(saved_model, tmp_path):
    folder = tmp_path / "edited"
    folder.mkdir()
    config = json.loads((saved_model / "config.json").read_text())
    config["hyperparameters"]["n_hidden"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "weights.pt").write_bytes((saved_model / "weights.pt").read_bytes())
    with pytest.raises(ValueError, match=r"weights.pt does not match the config"):
        sat.Model.load(folder)
    (folder / "weights.pt").write_bytes(b"not torch")
    with pytest.raises(ValueError, match=r"weights.pt: not a saved state dict \(damaged, or not written by Model.save: "
                                         r"Unsupported operand \d+\)$") as refused:
        sat.Model.load(folder)
    assert "weights_only" not in str(refused.value)  # torch's advice to load it unsafely is not passed on
    (folder / "weights.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"weights.pt: not a saved state dict \(empty or cut short\)$"):
        sat.Model.load(folder)
    torch.save({"weights": _Foreign()}, folder / "weights.pt")  # needs code of its own to load
    with pytest.raises(ValueError, match=r"not written by Model.save: Unsupported global: .*_Foreign was not an "
                                         r"allowed global by default\)$") as refused:
        sat.Model.load(folder)
    assert "safe_globals" not in str(refused.value) and "trust" not in str(refused.value)


class _Foreign:
    """An object a weights file should not hold."""


def test_a_home_folder_written_as_a_tilde_is_the_home_folder(saved_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    model = sat.Model.load(saved_model)
    model.save("~/models/best")
    assert (tmp_path / "models" / "best" / "config.json").is_file() and not (tmp_path.parent / "~").exists()
    assert sat.Model.load("~/models/best").hyperparameters == model.hyperparameters


def test_model_save_never_leaves_half_a_model(saved_model, tmp_path, monkeypatch):
    model = sat.Model.load(saved_model)
    target = tmp_path / "model"
    model.save(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken(self):
        blob = original(self)
        blob["weights"] = None  # write_bytes(None) fails half way through the save
        return blob

    original = sat.Model.to_dict
    monkeypatch.setattr(sat.Model, "to_dict", broken)
    with pytest.raises(TypeError):
        model.save(target, overwrite=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left


def test_model_save_overwrites_only_a_saved_model(saved_model, tmp_path):
    model = sat.Model.load(saved_model)
    project = tmp_path / "project"
    project.mkdir()
    (project / "analysis.ipynb").write_text("my notebook")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"holds files that are not a saved model \(analysis.ipynb\)"):
            model.save(project, overwrite=overwrite)
    assert [p.name for p in project.iterdir()] == ["analysis.ipynb"]
    target = tmp_path / "model"
    model.save(target)
    with pytest.raises(ValueError, match=r"holds a saved model; pass overwrite=True"):
        model.save(target)
    with pytest.raises(ValueError, match=r"overwrite='yes' must be True or False"):
        model.save(target, overwrite="yes")
    model.save(target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "weights.pt"]


# ---------------------------------------------------------------------------
# the command line: outputs checked before the input is read, nothing created on failure
# ---------------------------------------------------------------------------


def test_cli_checks_every_output_before_it_reads_the_input(tiny, tmp_path, capsys):
    source = tmp_path / "in.h5ad"
    tiny.write_h5ad(source)
    (tmp_path / "afile").write_text("x")
    cases = [
        (["tune", str(tmp_path / "missing.h5ad"), "-o", str(tmp_path / "new" / "out.h5ad")], "no such file"),
        (["tune", str(source), "-o", str(tmp_path / "afile" / "out.h5ad")], "is a file, not a folder"),
        (["tune", str(source), "-o", str(tmp_path)], "is a folder; pass a file path"),
        (["tune", str(source), "-o", str(tmp_path / "o.h5ad"), "--journal", str(tmp_path)], "--journal"),
        (["tune", str(source), "-o", str(tmp_path / "out.zarr")], "written as an .h5ad file; give it the suffix .h5ad"),
        (["tune", str(source), "-o", str(tmp_path / "same.h5ad"), "--journal", str(tmp_path / "same.h5ad")],
         "-o and --journal are the same file"),
        (["tune", str(source), "-o", str(tmp_path / "o.h5ad"), "--plots", str(tmp_path / "afile")],
         "--plots " + str(tmp_path / "afile") + " is a file, not a folder"),
        (["tune", str(source), "-o", str(tmp_path / "o.h5ad"), "--seed", str(2**64)], "--seed 18446744073709551616"),
    ]
    for argv, message in cases:
        assert cli.main([*argv, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert not (tmp_path / "new").exists() and not (tmp_path / "o.h5ad").exists()


@pytest.mark.parametrize(
    "space, message",
    [
        ({"lr": ["log", 1e-4]}, r'\[\\"log\\", 1e-4\]|write \["log", low, high\]'),
        ({"lr": ["choice", 1e-4, 1e-3]}, r'write \["choice", \[value, ...\]\]'),
    ],
)
def test_cli_space_shorthand_mistakes_say_how_to_write_it(space, message):
    with pytest.raises(ValueError, match=message):
        cli.space_from_json(space)


def test_written_files_get_the_permissions_a_plain_write_gives(tmp_path):
    """Temporary files are private (0600, 0700); what replaces a file must not be, or collaborators lose it."""
    from scanpy_autotune._paths import replace_dir, replace_file

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    previous = os.umask(0o022)
    try:
        replace_file(tmp_path / "new.txt", lambda p: p.write_text("x"))
        shared = tmp_path / "shared.txt"
        shared.write_text("old")
        shared.chmod(0o664)
        replace_file(shared, lambda p: p.write_text("new"))
        replace_dir(tmp_path / "model", lambda p: (p / "weights").write_text("x"))
    finally:
        os.umask(previous)
    assert (mode(tmp_path / "new.txt"), mode(shared), shared.read_text()) == (0o644, 0o664, "new")
    assert mode(tmp_path / "model") == 0o755


def test_cli_writes_its_output_all_at_once(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"an older result")

    def crash(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", crash)
    with pytest.raises(OSError, match="disk full"):
        cli._output._write_h5ad(tiny, out)
    assert out.read_bytes() == b"an older result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad"]


# ---------------------------------------------------------------------------
# messages follow sc.settings.verbosity
# ---------------------------------------------------------------------------


def test_messages_follow_scanpy_verbosity(monkeypatch):
    import scanpy as sc

    from scanpy_autotune._logging import follow_scanpy_verbosity, logger

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a notebook: no root handler
    stream = io.StringIO()
    saved_level, saved_verbosity, saved_file = logger.level, sc.settings.verbosity, sc.settings.logfile
    sc.settings.logfile = stream
    try:
        logger.setLevel(logging.NOTSET)
        sc.settings.verbosity = 0
        follow_scanpy_verbosity()
        logger.info("hidden info")
        logger.error("shown error")
        sc.settings.verbosity = 2
        follow_scanpy_verbosity()
        logger.info("shown info")
        logger.debug("hidden debug")
    finally:
        sc.settings.verbosity = saved_verbosity
        sc.settings.logfile = saved_file
        logger.setLevel(saved_level)
    text = stream.getvalue()
    assert "shown error" in text and "shown info" in text
    assert "hidden info" not in text and "hidden debug" not in text


def test_messages_look_like_scanpy_s_before_scanpy_is_imported(monkeypatch, capsys):
    """Before Scanpy is imported nobody changed its settings: its default format on stderr, without its import."""
    import scanpy as sc

    from scanpy_autotune._logging import follow_scanpy_verbosity, logger

    def emit_each_level():
        logger.info("hidden info")
        logger.warning("a warning")
        logger.error("an error")
        logger.setLevel(logging.DEBUG)
        sc.settings.verbosity = 4  # read only once Scanpy is imported
        logger.info("an info")
        logger.log(15, "a hint")
        logger.debug("a debug")

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a notebook: no root handler
    saved_level, saved_verbosity, saved_file = logger.level, sc.settings.verbosity, sc.settings.logfile
    try:
        with monkeypatch.context() as without_scanpy:
            without_scanpy.delitem(sys.modules, "scanpy")
            logger.setLevel(logging.NOTSET)
            follow_scanpy_verbosity()  # Scanpy's default verbosity: warnings
            assert logger.level == logging.WARNING
            emit_each_level()
            assert "scanpy" not in sys.modules
        ours = capsys.readouterr().err
        stream = io.StringIO()
        sc.settings.verbosity, sc.settings.logfile = 1, stream
        logger.setLevel(logging.NOTSET)
        follow_scanpy_verbosity()
        emit_each_level()  # now through scanpy.logging
    finally:
        sc.settings.verbosity, sc.settings.logfile = saved_verbosity, saved_file
        logger.setLevel(saved_level)
    assert ours.splitlines() == ["WARNING: a warning", "ERROR: an error", "an info", "--> a hint", "    a debug"]
    assert ours == stream.getvalue().replace("\r", "")
    # in Jupyter, Scanpy's default logfile is stdout
    monkeypatch.setattr(builtins, "__IPYTHON__", True, raising=False)
    monkeypatch.delitem(sys.modules, "scanpy")
    logger.warning("in a notebook")
    assert capsys.readouterr().out == "WARNING: in a notebook\n"


@pytest.mark.parametrize("layer", [None, "raw"])
def test_counts_kept_in_adata_raw_are_pointed_to_and_the_hint_works(tiny, layer, tmp_path):
    """The common scanpy layout: counts in adata.raw, log-normalised values of fewer genes in X."""
    import scanpy as sc

    tiny.raw = tiny.copy()
    sc.pp.normalize_total(tiny)
    sc.pp.log1p(tiny)
    adata = tiny[:, 5:].copy()  # the genes kept after a selection; raw keeps all 30
    message = r"non-integer value\(s\)" if layer is None else r"layer='raw' is not in adata.layers"
    hint = r" adata.raw holds counts: copy them into a layer, {}adata.layers\['counts'\] = adata.raw\[:, adata.var_names\].X"
    _refused(adata, message + r".*" + hint.format(""), layer=layer)
    path = tmp_path / "backed.h5ad"
    adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(ValueError, match=message + r".*" + hint.format(r"adata = adata.to_memory\(\); ")):
        sat.tl.autotune(backed, **{**FAST, "layer": layer})
    for pasted in (adata, backed):  # the hint, as printed
        if pasted.isbacked:
            pasted = pasted.to_memory()
        pasted.layers["counts"] = pasted.raw[:, pasted.var_names].X
        _refused(pasted, "max_evals", layer="counts", max_evals=0)  # the counts pass every check
    adata.raw = adata.copy()  # a raw of the log-normalised values, as scanpy's tutorial keeps it
    del adata.layers["counts"]
    with pytest.raises(ValueError, match=r"non-integer value\(s\)") as refused:
        sat.tl.autotune(adata, **FAST)
    assert "adata.raw" not in str(refused.value)  # no hint towards values that are no counts


def test_an_objective_that_cannot_reach_the_workers_is_refused_before_any_trial(tiny):
    import threading

    lock = threading.Lock()

    def objective(model, heldout):
        with lock:
            return model.marginal_nll(heldout, cells="all")

    _refused(tiny, r"objective=.* cannot be sent to the worker processes .*TypeError: cannot pickle '_thread.lock'",
             objective=objective)


@pytest.mark.parametrize(("layer", "batch_key"), [(None, None), ("counts", "batch")])
def test_many_genes_bring_advice_once_before_the_search_and_it_runs_as_printed(caplog, layer, batch_key):
    import scanpy as sc

    rng = np.random.default_rng(0)
    # Genes of different means, as real ones: seurat_v3 fits the variance against the mean across genes.
    counts = rng.poisson(rng.lognormal(-1.0, 1.0, size=5001), size=(100, 5001)).astype(np.float32)
    counts[:, 0] = 1  # no empty cell
    adata = ad.AnnData(sp.csr_matrix(counts))
    adata.obs["batch"] = ["a", "b"] * 50
    if layer is not None:
        adata.layers[layer] = adata.X.copy()
        adata.X = sp.csr_matrix(np.log1p(counts))  # what X often holds beside a counts layer
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"), pytest.raises(ValueError, match="max_evals"):
        sat.tl.autotune(adata, **{**FAST, "max_evals": 0, "layer": layer, "batch_key": batch_key})
    (advice,) = [r.getMessage() for r in caplog.records if "highly variable genes" in r.getMessage()]
    assert advice.startswith("adata has 5001 genes") and "pip install scikit-misc" in advice
    code = advice[advice.index("sc.pp.highly_variable_genes("):]
    assert (f"layer={layer!r}" in code) is (layer is not None)
    assert (f"batch_key={batch_key!r}" in code) is (batch_key is not None)
    namespace = {"sc": sc, "adata": adata}
    exec(code, namespace)  # the advice, as a user pastes it
    assert namespace["adata"].shape == (100, 3000)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="scanpy_autotune"), pytest.raises(ValueError, match="max_evals"):
        sat.tl.autotune(adata[:, :5000].copy(), **{**FAST, "max_evals": 0, "layer": layer})
    assert not [r for r in caplog.records if "highly variable genes" in r.getMessage()]


@pytest.mark.parametrize(
    ("startup", "message"),
    [
        ("best", r"startup='best': use 'winners'"),
        ([{"n_hidden": 128}], r"startup\[0\] gives no value for the searched hyperparameter"),
        ([{"n_hidden": 100, "n_latent": 10, "n_layers": 1, "dropout_rate": 0.1, "reconstruction_loss": "zinb",
           "lr": 1e-3}], r"startup\[0\] = .* lies outside the search space"),
    ],
)
def test_bad_startup_configurations_are_refused_before_any_training(tiny, startup, message):
    _refused(tiny, message, startup=startup)


@pytest.mark.parametrize("n_cells, message", [(0, "n_cells=0 must be an integer >= 1"),
                                              (-5, "n_cells=-5 must be"), (1.5, "n_cells=1.5 must be an integer")])
def test_default_max_epochs_takes_a_number_of_cells(n_cells, message):
    from scanpy_autotune.tl._autotune import default_max_epochs

    assert [default_max_epochs(n) for n in (1, 20_000, 40_000, 10**7)] == [400, 400, 200, 1]
    with pytest.raises(ValueError, match=message):
        default_max_epochs(n_cells)


def test_an_objective_must_return_one_number():
    from scanpy_autotune._search._objective import _one_number

    assert _one_number(1.5) == 1.5 and _one_number(np.float32(2.0)) == 2.0 and _one_number(np.array([3.0])) == 3.0
    for bad, shown in [("1.5", "str '1.5'"), (True, "bool True"), (None, "NoneType None"),
                       (np.array([1.0, 2.0]), "ndarray array"), ([1.0], "list [1.0]")]:
        with pytest.raises(TypeError, match=rf"the objective must return one number \(the loss, lower is better\), got {re.escape(shown)}"):
            _one_number(bad)
