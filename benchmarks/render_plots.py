"""Render every ``sat.pl`` figure of a search to PNG (the README's images).

    python benchmarks/render_plots.py benchmarks/results/searches/<run>_uns.h5ad --out docs/images

The input is any ``.h5ad`` whose ``uns["autotune"]`` holds a search, e.g. the
one ``benchmarks/search.py run`` keeps; the plots read nothing else.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anndata as ad
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import scanpy_autotune as sat  # noqa: E402

PLOTS = {
    "trial_history": sat.pl.trial_history,
    "optimization_history": sat.pl.optimization_history,
    "sensitivity": sat.pl.sensitivity,
    "param_importance": sat.pl.param_importance,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("h5ad", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    adata = ad.read_h5ad(args.h5ad)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, plot in PLOTS.items():
        result = plot(adata, show=False)  # Axes, or an array of Axes (one per panel)
        figure = np.ravel(result)[0].figure
        figure.savefig(args.out / f"{name}.png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        print(args.out / f"{name}.png")


if __name__ == "__main__":
    main()
