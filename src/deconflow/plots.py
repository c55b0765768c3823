"""Figures: Miami plot (true above the axis, predicted mirrored below), true-vs-predicted scatter and
training curves (``training_log.csv``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .errors import DeconflowError  # noqa: E402
from .evaluation import pearson_r, wide_from_long  # noqa: E402
from .io import atomic_path  # noqa: E402
from .io.tables import read_table, to_numbers  # noqa: E402

#: beyond this many cell types, the smallest are grouped as "other" so the legend stays readable
MAX_LEGEND_TYPES = 20
OTHER = "other"


def cell_type_colours(cell_types) -> dict[str, tuple]:
    """A fixed colour per cell type (sorted order), from qualitative palettes (up to 60 distinct)."""
    palette = [*plt.get_cmap("tab20").colors, *plt.get_cmap("tab20b").colors, *plt.get_cmap("tab20c").colors]
    names = sorted(set(map(str, cell_types)) - {OTHER})
    colours = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    colours[OTHER] = (0.6, 0.6, 0.6, 1.0)
    return colours


def group_small_types(true: np.ndarray, pred: np.ndarray, cell_types: list[str], keep: int = MAX_LEGEND_TYPES - 1):
    """Keep the ``keep`` types with the largest mean (true + predicted); sum the rest as "other"."""
    if len(cell_types) <= MAX_LEGEND_TYPES:
        return true, pred, list(cell_types)
    score = true.mean(axis=0) + pred.mean(axis=0)
    kept = np.sort(np.argsort(-score, kind="stable")[:keep])
    rest = np.setdiff1d(np.arange(len(cell_types)), kept)
    names = [cell_types[i] for i in kept] + [f"{OTHER}"]
    true_g = np.column_stack([true[:, kept], true[:, rest].sum(axis=1)])
    pred_g = np.column_stack([pred[:, kept], pred[:, rest].sum(axis=1)])
    return true_g, pred_g, names


def select_samples(n_total: int, n_samples: int) -> np.ndarray:
    """Evenly spaced sample indices (covers dense and sparse mixtures; deterministic)."""
    n_samples = min(n_samples, n_total)
    return np.unique(np.linspace(0, n_total - 1, n_samples).round().astype(int))


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def flagged_samples(qc: pd.DataFrame | None) -> dict[str, str]:
    """{sample id: flag reasons} of the samples a ``qc.csv`` table flags (``deconflow.trust``)."""
    if qc is None:
        return {}
    flags = qc["flag"].fillna("").astype(str)
    return {str(s): f for s, f in zip(qc["sample_id"], flags) if f}


def miami_plot(summary: pd.DataFrame, path: str | Path, n_samples: int = 20, title: str = "",
               flagged: dict[str, str] | None = None) -> None:
    """Stacked true (up) and predicted (down) proportions per sample; ``flagged`` samples
    ({id: reasons}, from ``qc.csv``) get a red "!" label and their reasons listed under the plot."""
    true, pred, samples, cell_types = wide_from_long(summary)
    colours = cell_type_colours(cell_types)
    idx = select_samples(len(samples), n_samples)
    true, pred, names = group_small_types(true[idx], pred[idx], cell_types)
    x = np.arange(len(idx))
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(idx) + 4), 6))
    bottom_true = np.zeros(len(idx))
    bottom_pred = np.zeros(len(idx))
    for k, name in enumerate(names):
        ax.bar(x, true[:, k], bottom=bottom_true, color=colours[name], width=0.85, label=name, edgecolor="none")
        ax.bar(x, -pred[:, k], bottom=-bottom_pred, color=colours[name], width=0.85, edgecolor="none")
        bottom_true += true[:, k]
        bottom_pred += pred[:, k]
    ax.axhline(0, color="black", linewidth=1)
    ax.set_ylim(-1.05, 1.05)
    ax.set_yticks([-1, -0.5, 0, 0.5, 1])
    ax.set_yticklabels(["1.0", "0.5", "0", "0.5", "1.0"])
    ax.set_ylabel("predicted proportion        true proportion")
    ax.set_xticks(x)
    flagged = flagged or {}
    shown = [str(samples[i]) for i in idx]
    ax.set_xticklabels([f"! {name}" if name in flagged else name for name in shown], rotation=90, fontsize=7)
    for label, name in zip(ax.get_xticklabels(), shown):
        if name in flagged:
            label.set_color("tab:red")
    notes = [f"{name}: {flagged[name]}" for name in shown if name in flagged]
    if notes:
        ax.text(0.0, -0.32, "flagged (qc.csv): " + "; ".join(notes[:12]) + (" ..." if len(notes) > 12 else ""),
                transform=ax.transAxes, ha="left", va="top", fontsize=7, color="tab:red", wrap=True)
    ax.text(1.0, 1.0, "true", transform=ax.transAxes, ha="right", va="bottom", fontsize=9)
    ax.text(1.0, 0.0, "predicted", transform=ax.transAxes, ha="right", va="top", fontsize=9)
    ax.set_title(f"Miami plot {title}".strip())
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, title="cell type")
    _save(fig, path)


def scatter_plot(summary: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """True vs predicted per type; with ``lower`` / ``upper`` columns (calibrated intervals,
    ``deconflow.trust``) each point gets its interval as a vertical error bar."""
    true, pred, samples, cell_types = wide_from_long(summary)
    bounds = None
    if {"lower", "upper"} <= set(summary.columns) and summary[["lower", "upper"]].notna().all().all():
        bounds = [summary.pivot(index="sample_id", columns="cell_type", values=c).loc[samples, cell_types].to_numpy()
                  for c in ("lower", "upper")]
    colours = cell_type_colours(cell_types)
    n = len(cell_types)
    ncols = min(6, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for k, name in enumerate(cell_types):
        ax = axes[k // ncols][k % ncols]
        hi = max(true[:, k].max(), pred[:, k].max(), 1e-3) * 1.05
        if bounds is not None:
            hi = max(hi, bounds[1][:, k].max() * 1.05)
            error = np.vstack([pred[:, k] - bounds[0][:, k], bounds[1][:, k] - pred[:, k]]).clip(0, None)
            ax.errorbar(true[:, k], pred[:, k], yerr=error, fmt="none", ecolor=colours[name], alpha=0.5, linewidth=0.8)
        ax.plot([0, hi], [0, hi], color="grey", linewidth=0.8, linestyle="--")
        ax.scatter(true[:, k], pred[:, k], s=6, color=colours[name], alpha=0.7)
        r = pearson_r(true[:, k], pred[:, k])
        ax.set_title(f"{name}\nr = {r:.3f}", fontsize=8)
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.tick_params(labelsize=6)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.supxlabel("true proportion")
    fig.supylabel("predicted proportion")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


#: columns every ``training_log.csv`` has (written by ``deconflow.training.write_history``)
TRAINING_LOG_COLUMNS = ("epoch", "val_mae", "val_mean_r")
_RERUN_TRAINING = "rerun rule train_model for this dataset and model (snakemake --forcerun train_model)"


def loss_terms(history: pd.DataFrame) -> list[str]:
    """Loss terms logged for both training and validation (``train_<term>`` and ``val_<term>``),
    in log order, with ``total`` last."""
    terms = [c[len("train_"):] for c in history.columns if c.startswith("train_")]
    terms = [t for t in terms if f"val_{t}" in history.columns]
    return [t for t in terms if t != "total"] + [t for t in terms if t == "total"]


def check_training_log(history: pd.DataFrame, source=None) -> None:
    """Refuse a training log without epochs, the validation metrics or a train/val loss pair."""
    missing = [c for c in TRAINING_LOG_COLUMNS if c not in history.columns]
    if missing:
        raise DeconflowError(
            source,
            f"training log lacks column(s) {missing} (has {list(history.columns)})",
            f"give a training_log.csv written by deconflow training; {_RERUN_TRAINING}",
        )
    if not loss_terms(history):
        raise DeconflowError(
            source,
            "training log has no loss term logged for both training and validation (train_<term>, val_<term>)",
            f"give a training_log.csv written by deconflow training; {_RERUN_TRAINING}",
        )
    if history.empty:
        raise DeconflowError(source, "training log has no epochs", _RERUN_TRAINING)


def read_training_log(path: str | Path) -> pd.DataFrame:
    """A ``training_log.csv`` as a table (one row per epoch), checked by :func:`check_training_log`."""
    path = Path(path)
    if not path.exists():
        raise DeconflowError(path, "training log does not exist", _RERUN_TRAINING)
    frame = read_table(path, "training log", _RERUN_TRAINING, header=True, min_columns=1)
    history = to_numbers(frame, frame.columns, "training log", _RERUN_TRAINING, allow_missing=True)
    check_training_log(history, path)
    return history


#: text columns of a long summary table (evaluate_model / evaluate_bulk); the others are numbers
SUMMARY_TEXT_COLUMNS = ("sample_id", "cell_type")


def read_summary(path: str | Path) -> pd.DataFrame:
    """A ``summary_stats.csv`` read back: sample ids and cell-type labels stay text (cluster
    numbers like ``0``, ``10`` included), ``true_proportion`` / ``predicted_proportion`` numbers."""
    fix = "rerun the rule that wrote it (`snakemake --forcerun evaluate_model`)"
    frame = read_table(path, "summary table", fix, header=True)
    numeric = [c for c in frame.columns if c not in SUMMARY_TEXT_COLUMNS]
    summary = pd.concat([frame[[c for c in frame.columns if c in SUMMARY_TEXT_COLUMNS]],
                         to_numbers(frame, numeric, "summary table", fix)], axis=1)[list(frame.columns)]
    return summary


def training_curves_plot(history: pd.DataFrame, path: str | Path, title: str = "", source=None) -> None:
    """One panel per loss term (training solid, validation dashed; the total panel also shows the
    validation selection loss when logged), then validation MAE and validation mean r per epoch.
    ``source`` names the log in errors."""
    check_training_log(history, source)
    terms = loss_terms(history)
    epochs = history["epoch"].to_numpy()
    n_panels = len(terms) + 2
    ncols = min(4, n_panels)
    nrows = int(np.ceil(n_panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False)
    panels = [ax for row in axes for ax in row]
    marker = "o" if len(epochs) <= 30 else None
    for ax, term in zip(panels, terms):
        ax.plot(epochs, history[f"train_{term}"], color="tab:blue", marker=marker, markersize=3, label="train")
        ax.plot(epochs, history[f"val_{term}"], color="tab:orange", linestyle="--", marker=marker, markersize=3,
                label="validation")
        if term == "total" and "val_selection" in history.columns:
            ax.plot(epochs, history["val_selection"], color="tab:green", linestyle=":", label="val. selection")
        values = history[[f"train_{term}", f"val_{term}"]].to_numpy()
        if np.all(values > 0) and values.max() / values.min() > 100:
            ax.set_yscale("log")
        ax.set_title(f"loss: {term}", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    for ax, column, label in ((panels[len(terms)], "val_mae", "validation MAE"),
                              (panels[len(terms) + 1], "val_mean_r", "validation mean r")):
        ax.plot(epochs, history[column], color="tab:red", marker=marker, markersize=3)
        ax.set_title(label, fontsize=9)
    for ax in panels[:n_panels]:
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in panels[n_panels:]:
        ax.axis("off")
    fig.supxlabel("epoch")
    fig.suptitle(f"Training curves {title}".strip())
    fig.tight_layout()
    _save(fig, path)
