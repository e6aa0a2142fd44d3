"""Tuning for integration on CellBench (5 cell lines over 3 plates): issue 19's targets.

    python benchmarks/integration.py search [--max-evals 50] [--workers 2] [--space integration]   # resumable
    python benchmarks/integration.py defaults [--seeds 3]
    python benchmarks/integration.py scvi --scvi-python VENV/bin/python
    python benchmarks/integration.py kl [--warmups 400 0] [--weights 10 100] [--seeds 3] [--configs ...]  # resumable
    python benchmarks/integration.py report

``search`` runs ``sat.tl.autotune(objective="integration", batch_key="batch",
labels_key="cell_type")`` on ``cellbench_5cl_3plates_909x16074.h5ad`` over the
2019 space (or, ``--space integration``, over ``sat.tl.integration_space()``); ``defaults``
trains scVI's default configuration on the same training cells with several
seeds and scores it with the same code; ``scvi`` trains scvi-tools' default
``SCVI`` (``batch_key="batch"``) on the same training cells in its own virtual
environment and scores its latent of the same held-out cells with the same code;
``kl`` retrains the integration winner and the default configuration (``--configs``;
``space`` adds the winner of the ``integration_space()`` search) with
other KL warm-up lengths (``n_epochs_kl_warmup``; 0 is the full KL weight from
the first epoch) and other final KL weights (``max_kl_weight``, after scVI's
400-epoch warm-up), several seeds each, and scores them the same way: does the
KL weight, which the 2019 space leaves at scVI's schedule, hold integration back?
``report`` writes ``results/integration.md``: Total, Bio conservation, Batch
correction and held-out NLL of each, the share of the trial time that scoring
took, and the NLL of the integration winner beside the NLL winner's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, RESULTS, journal_trials, write  # noqa: E402

import scanpy_autotune as sat  # noqa: E402
from scanpy_autotune._scib import integration_scores, unintegrated_embedding  # noqa: E402
from scanpy_autotune._search import VALIDATION_SIZE  # noqa: E402
from scanpy_autotune._vae import default_hyperparameters  # noqa: E402
from scanpy_autotune._vae._data import DeviceCounts, extract_counts, make_split  # noqa: E402
from scanpy_autotune._vae._metrics import latent_mean, marginal_nll  # noqa: E402

DATASET = "cellbench_5cl_3plates_909x16074.h5ad"
SEED, TRAIN_SIZE, N_MC = 0, 0.75, 100
SEARCHES = RESULTS / "searches"
WORK = RESULTS / "integration_runs"


def _tag(max_evals: int, space: str = "default") -> str:
    suffix = "" if space == "default" else f"_{space}_space"
    return f"cellbench_5cl_3plates_909x16074_w2_integration_n{max_evals}_s{SEED}{suffix}"


def _scored(trials: list[dict]) -> list[dict]:
    """The trials that finished with integration scores."""
    return [t for t in trials if t["status"] == "ok" and t.get("scores")]


def _winner(trials: list[dict]) -> dict:
    """The scored trial with the highest Total."""
    return max(_scored(trials), key=lambda t: t["scores"]["total"])


def _search_trials(max_evals: int, space: str = "default") -> list[dict]:
    return journal_trials(SEARCHES / f"{_tag(max_evals, space)}.jsonl")


def _data():
    adata = ad.read_h5ad(DATA / DATASET)
    data = extract_counts(adata, batch_key="batch")
    split = make_split(data.n_obs, train_size=TRAIN_SIZE, validation_size=VALIDATION_SIZE, seed=SEED)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    batch = adata.obs["batch"].astype(str).to_numpy()
    return adata, data, split, labels, batch


def search(args: argparse.Namespace) -> None:
    adata = ad.read_h5ad(DATA / DATASET)
    SEARCHES.mkdir(parents=True, exist_ok=True)
    tag = _tag(args.max_evals, args.space)
    space = sat.tl.integration_space() if args.space == "integration" else None
    start = time.perf_counter()
    sat.tl.autotune(
        adata, batch_key="batch", labels_key="cell_type", objective="integration", max_evals=args.max_evals,
        n_workers=args.workers, gpus=None, seed=SEED, pruner=None, patience=None, journal=SEARCHES / f"{tag}.jsonl",
        space=space,
    )
    seconds = time.perf_counter() - start
    uns = ad.AnnData(obs=adata.obs[["autotune_split"]].copy(), uns={"autotune": adata.uns["autotune"]})
    uns.write_h5ad(SEARCHES / f"{tag}_uns.h5ad", compression="gzip")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / f"{tag}.wall.json").write_text(json.dumps({"seconds_this_call": seconds}))
    print(f"{tag}: {seconds:.0f} s")


def _score(latent: np.ndarray, heldout: np.ndarray, labels, batch, pre) -> dict:
    return integration_scores(latent, labels[heldout], batch[heldout], pre)


def _evaluate(model, counts: DeviceCounts, heldout: np.ndarray, labels, batch, pre) -> dict:
    """A trained model's held-out NLL and integration scores, as the search computes them."""
    scores = _score(latent_mean(model.module, counts, heldout), heldout, labels, batch, pre)
    nll = float(np.mean(marginal_nll(model.module, counts, heldout, n_mc=N_MC)))
    return {"marginal_nll": nll, **scores}


def defaults(args: argparse.Namespace) -> None:
    _, data, split, labels, batch = _data()
    pre = unintegrated_embedding(data.X[split.heldout])
    counts = DeviceCounts(data, "cpu")
    rows = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        model = sat.Model.fit_prepared(
            data, counts, split, default_hyperparameters(), seed=SEED + seed, max_epochs=400, batch_key="batch"
        )
        seconds = time.perf_counter() - start
        evaluated = _evaluate(model, counts, split.heldout, labels, batch, pre)
        rows.append({"what": f"default, seed {SEED + seed}", "train_s": seconds, **evaluated})
        print(rows[-1])
    WORK.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(WORK / "defaults.csv", index=False)


KL_CSV = WORK / "kl_warmup.csv"


def kl(args: argparse.Namespace) -> None:
    _, data, split, labels, batch = _data()
    pre = unintegrated_embedding(data.X[split.heldout])
    counts = DeviceCounts(data, "cpu")
    winner = _winner(_search_trials(args.max_evals))
    configs = {
        "default": default_hyperparameters(),
        f"integration winner (trial {winner['trial_id']})": {**default_hyperparameters(), **winner["params"]},
    }
    if "space" in args.configs:
        space_winner = _winner(_search_trials(args.max_evals, "integration"))
        name = f"space winner (trial {space_winner['trial_id']} of integration_space())"
        configs[name] = {**default_hyperparameters(), **space_winner["params"]}
    configs = {name: config for name, config in configs.items() if name.split()[0] in args.configs}
    columns = ["config", "warmup", "max_kl_weight", "seed"]
    done = pd.read_csv(KL_CSV) if KL_CSV.exists() else pd.DataFrame(columns=columns)
    WORK.mkdir(parents=True, exist_ok=True)
    finished = {(r.config, int(r.warmup), float(r.max_kl_weight), int(r.seed)) for r in done.itertuples()}
    variants = [(warmup, 1.0) for warmup in args.warmups]
    variants += [(400, float(weight)) for weight in args.weights if weight != 1]
    for warmup, weight in variants:
        for name, config in configs.items():
            for seed in range(SEED, SEED + args.seeds):
                if (name, warmup, weight, seed) in finished:
                    continue
                start = time.perf_counter()
                model = sat.Model.fit_prepared(
                    data, counts, split, {**config, "n_epochs_kl_warmup": warmup, "max_kl_weight": weight},
                    seed=seed, max_epochs=400, batch_key="batch",
                )
                seconds = time.perf_counter() - start
                evaluated = _evaluate(model, counts, split.heldout, labels, batch, pre)
                result = model.train_result
                row = {"config": name, "warmup": warmup, "max_kl_weight": weight, "seed": seed,
                       "n_epochs": result.n_epochs, "best_epoch": result.best_epoch, "train_s": seconds, **evaluated}
                print(row, flush=True)
                done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
                done.to_csv(KL_CSV, index=False)
    _kl_report(done, args)


def _kl_report(runs: pd.DataFrame, args: argparse.Namespace) -> None:
    """Mean and range over seeds of each (configuration, warm-up, final KL weight)."""
    columns = ["total", "bio_conservation", "batch_correction", "marginal_nll", "n_epochs"]
    groups = runs.groupby(["config", "warmup", "max_kl_weight"], sort=False)
    table = groups[columns].mean()
    table.insert(1, "total_min", groups["total"].min())
    table.insert(2, "total_max", groups["total"].max())
    table.insert(0, "seeds", groups.size())
    table = table.reset_index()
    command = " ".join([
        "python benchmarks/integration.py kl", "--warmups", *(str(w) for w in args.warmups),
        "--weights", *(f"{w:g}" for w in args.weights), "--seeds", str(args.seeds), "--configs", *args.configs,
    ])
    notes = (
        f"\n- each row: the mean over its seeds ({SEED} to {SEED} + seeds - 1; Total's min and max beside it), "
        "trained on the search's training cells, scored on its held-out cells as the search scores\n"
        f"- runs: `{KL_CSV.relative_to(RESULTS.parent.parent)}`\n"
    )
    write("integration_kl", table, command, notes)
    print((RESULTS / "integration_kl.md").read_text())


SCVI_SIDE = '''
import json, sys
import anndata as ad, numpy as np, scvi, torch
torch.set_num_threads(2)
scvi.settings.seed = 0
scvi.settings.dl_num_workers = 0
job = json.loads(open(sys.argv[1]).read())
adata = ad.read_h5ad(job["path"])
train = adata[job["train"]].copy()
heldout = adata[job["heldout"]].copy()
scvi.model.SCVI.setup_anndata(train, batch_key="batch")
model = scvi.model.SCVI(train)
model.train(max_epochs=400, train_size=0.9, batch_size=128, early_stopping=True, enable_progress_bar=False)
latent = model.get_latent_representation(heldout)
np.save(job["out"], latent)
nll = -float(np.mean(np.asarray(model.get_marginal_ll(heldout, n_mc_samples=100, return_mean=False))))
print(json.dumps({"marginal_nll": nll, "version": scvi.__version__, "epochs": int(model.history["elbo_train"].shape[0])}))
'''


def scvi(args: argparse.Namespace) -> None:
    adata, data, split, labels, batch = _data()
    names = adata.obs_names
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        out = Path(tmp) / "latent.npy"
        job.write_text(json.dumps({
            "path": str(DATA / DATASET),
            "train": list(names[np.sort(np.concatenate([split.train, split.validation]))]),
            "heldout": list(names[split.heldout]),
            "out": str(out),
        }))
        side = Path(tmp) / "side.py"
        side.write_text(SCVI_SIDE)
        start = time.perf_counter()
        run = subprocess.run([args.scvi_python, str(side), str(job)], capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"scvi-tools side failed:\n{run.stderr[-4000:]}")
        info = json.loads(run.stdout.strip().splitlines()[-1])
        latent = np.load(out)
    pre = unintegrated_embedding(data.X[split.heldout])
    scores = _score(latent, split.heldout, labels, batch, pre)
    row = {"what": f"scvi-tools {info['version']} SCVI default, batch_key", "marginal_nll": info["marginal_nll"],
           "train_s": time.perf_counter() - start, "epochs": info["epochs"], **scores}
    print(row)
    WORK.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(WORK / "scvi.csv", index=False)


def report(args: argparse.Namespace) -> None:
    trials = _search_trials(args.max_evals)
    ok = _scored(trials)
    best = _winner(trials)
    nll_best = min((t for t in ok if t.get("marginal_nll") is not None), key=lambda t: t["marginal_nll"])
    default = next(t for t in trials if t.get("is_default"))
    defaults_csv = pd.read_csv(WORK / "defaults.csv")
    rows = []
    columns = ["total", "bio_conservation", "batch_correction", "marginal_nll"]
    for name, t in (("tuned (integration winner)", best), ("NLL winner of the same search", nll_best),
                    ("default configuration (trial 0)", default)):
        rows.append({"what": f"{name}: trial {t['trial_id']}", **{c: t["scores"][c] for c in columns[:3]},
                     "marginal_nll": t["marginal_nll"]})
    if (SEARCHES / f"{_tag(args.max_evals, 'integration')}.jsonl").exists():
        space_trials = _search_trials(args.max_evals, "integration")
        space_best = _winner(space_trials)
        weight = space_best["params"]["max_kl_weight"]
        rows.append({"what": f"tuned over integration_space() ({len(space_trials)} trials): trial "
                             f"{space_best['trial_id']}, max_kl_weight {weight:.3g}",
                     **{c: space_best["scores"][c] for c in columns[:3]}, "marginal_nll": space_best["marginal_nll"]})
    for _, row in defaults_csv.iterrows():
        rows.append({"what": row["what"], **{c: row[c] for c in columns}})
    if (WORK / "scvi.csv").exists():
        row = pd.read_csv(WORK / "scvi.csv").iloc[0]
        rows.append({"what": row["what"], **{c: row[c] for c in columns}})
    table = pd.DataFrame(rows)
    spread = defaults_csv["total"].max() - defaults_csv["total"].min()
    share = [t["scores"]["scoring_s"] / t["duration_s"] for t in ok if "scoring_s" in t["scores"]]
    mean_share = float(np.sum([t["scores"]["scoring_s"] for t in ok]) / np.sum([t["duration_s"] for t in ok]))
    notes = f"""
- search: `python benchmarks/integration.py search --max-evals {args.max_evals} --workers {args.workers}`
  ({len(trials)} trials, {len(ok)} scored, {sum(t['status'] == 'pruned' for t in trials)} pruned,
  {sum(t['status'] == 'fail' for t in trials)} failed); the held-out cells are scored
- defaults: `python benchmarks/integration.py defaults --seeds {len(defaults_csv)}`; seed-to-seed spread of
  the default's Total: {spread:.4f} (max - min); tuned minus the best default seed:
  {best['scores']['total'] - defaults_csv['total'].max():+.4f}
- scoring's share of the trial time: {100 * mean_share:.1f}% of all scored trials' seconds
  (median per trial {100 * float(np.median(share)):.1f}%; the first trial of each worker includes
  compiling scib-metrics' numba code)
- the cost of integrating: held-out NLL {best['marginal_nll']:.2f} (integration winner) against
  {nll_best['marginal_nll']:.2f} (NLL winner), {100 * (best['marginal_nll'] - nll_best['marginal_nll']) / nll_best['marginal_nll']:+.2f}%
"""
    write("integration", table, "python benchmarks/integration.py report", notes)
    print((RESULTS / "integration.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("search", "defaults", "scvi", "kl", "report"):
        sub = commands.add_parser(name)
        sub.add_argument("--max-evals", type=int, default=50)
        sub.add_argument("--workers", type=int, default=2)
        sub.add_argument("--seeds", type=int, default=3)
        sub.add_argument("--warmups", type=int, nargs="*", default=[400, 0],
                         help="KL warm-ups at weight 1 (none: only --weights)")
        sub.add_argument("--weights", type=float, nargs="+", default=[])
        sub.add_argument("--configs", nargs="+", choices=("default", "integration", "space"),
                         default=["default", "integration"])
        sub.add_argument("--space", choices=("default", "integration"), default="default",
                         help="search: the 2019 space or sat.tl.integration_space()")
        sub.add_argument("--scvi-python", default=str(Path("/work/scvi-venv/bin/python")))
    args = parser.parse_args()
    {"search": search, "defaults": defaults, "scvi": scvi, "kl": kl, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
