"""``bilevel-check sweep report DIR``: tables aggregated over seeds (median and
interquartile range), log-log rate fits, and plots (stationarity against iterations per
cell group; heatmaps over gamma x tau), written as PNG files and a Markdown summary.

Imports ``store`` and ``spec``; pandas when run, matplotlib for the plots.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_write_png, atomic_write_text
from .spec import SweepSpec
from .store import SweepStore

__all__ = ["aggregate", "loglog_slope", "write_report"]

#: Result columns summarized over seeds.
METRICS = ("phi", "grad_norm", "avg_grad_sq", "bias", "rate")


def loglog_slope(k, y) -> float:
    """Least-squares slope of ``log y`` against ``log k`` over the finite positive points
    (``k >= 1``); NaN with fewer than two such points. ``y ~ C k^p`` gives ``p``."""
    k, y = np.asarray(k, dtype=float), np.asarray(y, dtype=float)
    ok = (k >= 1) & np.isfinite(y) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(k[ok]), np.log(y[ok]), 1)[0])


def _group_columns(spec: SweepSpec) -> list:
    return ["algorithm", "problem", *spec.param_names, *spec.option_names]


def aggregate(results, spec: SweepSpec):
    """One row per cell group (every spec column but the seed): number of seeds, failed
    cells, and median / 25% / 75% quantiles of each metric over the finished seeds."""
    import pandas as pd

    groups = _group_columns(spec)
    rows = []
    for key, frame in results.groupby(groups, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(groups, key, strict=True))
        ok = frame[frame["status"] == "ok"]
        row["seeds"] = len(frame)
        row["failed"] = int((frame["status"] != "ok").sum())
        for m in METRICS:
            values = ok[m].astype(float) if m in ok else pd.Series(dtype=float)
            values = values[np.isfinite(values)]
            if len(values):
                q25, q50, q75 = np.quantile(values, [0.25, 0.5, 0.75])
            else:
                q25 = q50 = q75 = float("nan")
            row[f"{m}_median"], row[f"{m}_q25"], row[f"{m}_q75"] = q50, q25, q75
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown_table(frame, columns) -> str:
    def fmt(v):
        if isinstance(v, float | np.floating):
            return "nan" if not np.isfinite(v) else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(fmt(r[c]) for c in columns) + " |")
    return "\n".join(lines)


def write_report(folder, *, plots: bool = True) -> Path:
    """Write ``report.md`` (and PNG plots) into ``folder``; returns the Markdown path."""
    store = SweepStore(folder)
    manifest = store.read_manifest()
    if manifest is None:
        from .._validation import InvalidInputError

        raise InvalidInputError("DIR", "a sweep folder holding manifest.json", str(folder))
    spec = SweepSpec.from_dict(manifest["spec"], source="manifest.json spec")
    results = store.read_results()
    table = aggregate(results, spec)
    iterates = store.read_iterates()
    groups = _group_columns(spec)
    if iterates is not None:
        table["loglog_slope_grad_norm"] = [
            _group_slope(results, iterates, dict(zip(groups, row, strict=True)))
            for row in table[groups].itertuples(index=False)
        ]
    md = [
        f"# Sweep report: {spec.name}",
        "",
        f"{len(results)} cells of {manifest.get('cells', {}).get('total', '?')}; "
        f"complete: {manifest.get('complete')}; engine: {manifest.get('engine', {}).get('name')}.",
        f"Failed cells: {int((results['status'] != 'ok').sum())}.",
        "",
        "## Median over seeds [25%, 75%]",
        "",
    ]
    shown = groups + ["seeds", "failed"]
    for m in ("grad_norm", "phi", "bias", "rate"):
        table[f"{m} median [IQR]"] = [
            f"{a:.3g} [{b:.3g}, {c:.3g}]"
            for a, b, c in zip(
                table[f"{m}_median"], table[f"{m}_q25"], table[f"{m}_q75"], strict=True
            )
        ]
        shown.append(f"{m} median [IQR]")
    if "loglog_slope_grad_norm" in table:
        shown.append("loglog_slope_grad_norm")
    md.append(_markdown_table(table, shown))
    failed = results[results["status"] != "ok"]
    if len(failed):
        md += ["", "## Failed cells", ""]
        md.append(_markdown_table(failed, ["cell", *groups, "seed", "error"]))
    if plots:
        md += ["", "## Plots", ""]
        for name in _plots(folder, spec, results, iterates, groups):
            md.append(f"![{name}]({name})")
    path = Path(folder) / "report.md"
    atomic_write_text(path, "\n".join(md) + "\n")
    return path


def _group_slope(results, iterates, key: dict) -> float:
    mask = np.ones(len(results), dtype=bool)
    for c, v in key.items():
        mask &= (results[c] == v).to_numpy()
    cells = set(results.loc[mask & (results["status"] == "ok").to_numpy(), "cell"])
    sub = iterates[iterates["cell"].isin(cells)]
    if sub.empty:
        return float("nan")
    med = sub.groupby("k")["grad_norm"].median()
    running_min = np.minimum.accumulate(med.to_numpy())
    return loglog_slope(med.index.to_numpy() + 1, running_min)


def _plots(folder, spec, results, iterates, groups) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    if iterates is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, frame in results[results["status"] == "ok"].groupby(groups, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            sub = iterates[iterates["cell"].isin(set(frame["cell"]))]
            med = sub.groupby("k")["grad_norm"].median()
            ax.loglog(med.index.to_numpy() + 1, med.to_numpy(), label=", ".join(map(str, key)))
        ax.set_xlabel("iteration k + 1")
        ax.set_ylabel("median ||grad phi(x_k)|| over seeds")
        if len(ax.lines) <= 12:
            ax.legend(fontsize=7)
        atomic_write_png(Path(folder) / "stationarity.png", fig, dpi=110, bbox_inches="tight")
        plt.close(fig)
        names.append("stationarity.png")
    if "gamma" in spec.param_names and "tau" in spec.param_names:
        ok = results[results["status"] == "ok"]
        piv = ok.pivot_table(index="gamma", columns="tau", values="grad_norm", aggfunc="median")
        fig, ax = plt.subplots(figsize=(5, 4))
        im = ax.imshow(np.log10(piv.to_numpy(dtype=float)), origin="lower", aspect="auto")
        ax.set_xticks(range(piv.shape[1]), [f"{v:g}" for v in piv.columns])
        ax.set_yticks(range(piv.shape[0]), [f"{v:g}" for v in piv.index])
        ax.set_xlabel("tau")
        ax.set_ylabel("gamma")
        fig.colorbar(im, label="log10 median final ||grad phi||")
        atomic_write_png(Path(folder) / "heatmap_grad_norm.png", fig, dpi=110, bbox_inches="tight")
        plt.close(fig)
        names.append("heatmap_grad_norm.png")
    return names
