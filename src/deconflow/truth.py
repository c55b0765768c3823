"""Real bulk samples with measured cell fractions (e.g. flow cytometry): reading, checks, scoring.

A dataset's ``bulk`` is either one path (one bulk named ``bulk``) or a dict of named bulk inputs,
each ``{path, truth, truth_groups}``. ``truth`` is a samples x groups table of measured fractions
(they need not sum to 1: a flow panel rarely covers every cell); ``truth_groups`` maps each truth
group to the reference cell types it contains. Reference types mapped to no group are left out.

Scoring sums the predicted proportions of each group's types, then renormalises prediction and
truth over the mapped groups (rows sum to 1) before ``compute_metrics``, so the pseudobulk and
real-bulk metrics mean the same; ``mae_unrenormalised`` compares the raw group sums with the raw
truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DeconflowError
from .evaluation import PRESENCE_THRESHOLD, compute_metrics, long_table
from .io.tables import MISSING, read_numeric_table, read_table, to_numbers

#: The name of a dataset's bulk given as a plain path (`bulk: PATH`).
SINGLE_BULK_NAME = "bulk"


def named_bulks(bulk_setting) -> dict[str, dict]:
    """A dataset's ``bulk`` config as ``{name: {"path", "truth", "truth_groups"[, "format", "quantity", "strand", "tx2gene", "cell_mrna"]}}``.

    ``None`` -> no bulk; a path (or a list) -> one bulk named ``SINGLE_BULK_NAME`` without truth.
    ``path`` may be a list of paths or globs (per-sample files: salmon, RSEM, methylation calls);
    ``format``, ``quantity``, ``strand``, ``tx2gene`` and ``cell_mrna`` are kept when given.
    """
    if not bulk_setting:
        return {}
    if isinstance(bulk_setting, (str, Path, list)):
        bulk_setting = {SINGLE_BULK_NAME: {"path": bulk_setting}}
    return {
        name: {
            "path": str(entry["path"]) if isinstance(entry["path"], (str, Path)) else [str(p) for p in entry["path"]],
            "truth": entry.get("truth"),
            "truth_groups": dict(entry.get("truth_groups") or {}),
            # how to read it (deconflow.io.bulks): format, quantity, tx2gene; its mRNA per cell
            **{key: entry[key] for key in ("format", "quantity", "strand", "tx2gene", "cell_mrna") if entry.get(key) is not None},
        }
        for name, entry in bulk_setting.items()
    }


def read_truth(path: str | Path, key: str = "truth") -> pd.DataFrame:
    """Measured fractions, samples x groups (first column: sample id), checked: unique names,
    numeric, finite, in [0, 1]. ``key`` is the config key naming the file (for messages)."""
    path = Path(path)
    fix_layout = f"give `{key}` as a TSV/CSV with one row per sample (sample id first) and one column per group"
    if not path.exists():
        raise DeconflowError(path, f"truth file given as `{key}` does not exist", f"check `{key}`")
    frame = read_table(path, f"truth file `{key}`", fix_layout, header=True)
    if frame.shape[0] == 0 or frame.shape[1] < 2:
        raise DeconflowError(path, f"`{key}` has no sample rows or no group columns", fix_layout)
    index = pd.Index(frame.iloc[:, 0].to_numpy(), dtype=str)
    columns = pd.Index([str(c) for c in frame.columns[1:]])
    for names, what in ((index, "sample ids"), (columns, "group columns")):
        if names.has_duplicates:
            raise DeconflowError(path, f"`{key}` has duplicate {what}: {names[names.duplicated()].unique()[:5].tolist()}",
                                 "give every sample one row and every group one column")
    non_numeric = [c for c in frame.columns[1:] if pd.to_numeric(frame[c].str.replace(",", ".", regex=False), errors="coerce").isna().all()
                   and not frame[c].isin(list(MISSING)).all()]
    if non_numeric:
        raise DeconflowError(path, f"`{key}` has non-numeric group columns {non_numeric[:5]}",
                             "keep only the sample id as the first column and fractions in the others")
    truth = to_numbers(frame, frame.columns[1:], f"`{key}`", fix_layout, allow_missing=True)
    truth.index, truth.columns = index, columns
    values = truth.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = truth.index[~np.isfinite(values).all(axis=1)].tolist()
        raise DeconflowError(path, f"`{key}` has {int((~np.isfinite(values)).sum())} NaN/inf fractions (samples {bad[:5]})",
                             "drop the samples without a measurement or fill in the fractions")
    if values.min() < 0 or values.max() > 1:
        fix = "divide percentages by 100" if values.max() > 1 else "give fractions between 0 and 1"
        raise DeconflowError(path, f"`{key}` has fractions outside [0, 1] (min {values.min():.4g}, max {values.max():.4g})", fix)
    return truth.astype(np.float64)


def check_truth(truth: pd.DataFrame, truth_groups: dict, bulk_samples, cell_types, truth_path, bulk_path, key: str) -> None:
    """Check measured fractions and their mapping against the bulk and the model's cell types.

    ``key`` is the bulk's config key (e.g. ``datasets.pbmc.bulk.daism``); every message names the
    truth file, the offending key and the fix.
    """
    groups_key = f"{key}.truth_groups"
    if not truth_groups:
        raise DeconflowError(truth_path, f"`{groups_key}` is empty", "map each truth group to one or more reference cell types")
    missing_samples = [s for s in truth.index if s not in set(map(str, bulk_samples))]
    if missing_samples:
        raise DeconflowError(
            truth_path,
            f"`{key}.truth`: samples {missing_samples[:5]} are not in the bulk file {bulk_path}",
            "use the bulk file's sample ids (its column names) as the truth file's row names, or drop those rows",
        )
    missing_groups = [g for g in truth_groups if g not in truth.columns]
    if missing_groups:
        raise DeconflowError(
            truth_path,
            f"`{groups_key}`: groups {missing_groups} are not columns of the truth file (columns: {truth.columns.tolist()})",
            f"name each group of `{groups_key}` after a column of the truth file",
        )
    unknown = [t for types in truth_groups.values() for t in types if t not in set(map(str, cell_types))]
    if unknown:
        raise DeconflowError(
            truth_path,
            f"`{groups_key}`: cell types {unknown} are not cell types of the model (known: {list(cell_types)})",
            f"list only reference cell types in `{groups_key}` (spelled as in the reference labels)",
        )
    owner: dict[str, str] = {}
    for group, types in truth_groups.items():
        for cell_type in types:
            if cell_type in owner and owner[cell_type] != group:
                raise DeconflowError(
                    truth_path,
                    f"`{groups_key}`: cell type {cell_type!r} is in two groups ({owner[cell_type]!r} and {group!r})",
                    "put each reference cell type in one group at most",
                )
            owner[cell_type] = group


def group_sums(proportions: pd.DataFrame, truth_groups: dict) -> pd.DataFrame:
    """Samples x groups: each group's predicted proportion is the sum over its cell types."""
    return pd.DataFrame(
        {group: proportions.loc[:, list(types)].sum(axis=1) for group, types in truth_groups.items()},
        index=proportions.index,
    )


def renormalise_rows(values: pd.DataFrame) -> pd.DataFrame:
    """Rows scaled to sum to 1 (an all-zero row stays zero)."""
    totals = values.sum(axis=1)
    return values.div(totals.where(totals > 0, 1.0), axis=0)


def score_against_truth(proportions: pd.DataFrame, truth: pd.DataFrame, truth_groups: dict,
                        presence_threshold: float = PRESENCE_THRESHOLD) -> tuple[pd.DataFrame, dict]:
    """Long summary table and metrics of predicted ``proportions`` (samples x cell types) against
    measured ``truth`` (samples x groups) over the groups of ``truth_groups`` (checked inputs).

    Both sides are renormalised over the mapped groups; the summary table holds those values.
    """
    groups = list(truth_groups)
    predicted = group_sums(proportions.loc[truth.index], truth_groups)
    measured = truth.loc[:, groups]
    predicted_share, measured_share = renormalise_rows(predicted), renormalise_rows(measured)
    summary = long_table(measured_share.to_numpy(), predicted_share.to_numpy(), truth.index, groups)
    metrics = compute_metrics(measured_share.to_numpy(), predicted_share.to_numpy(), groups, presence_threshold)
    metrics["mae_unrenormalised"] = float(np.abs(predicted.to_numpy() - measured.to_numpy()).mean())
    metrics["mean_predicted_in_groups"] = float(predicted.sum(axis=1).mean())
    metrics["mean_measured_in_groups"] = float(measured.sum(axis=1).mean())
    mapped = {t for types in truth_groups.values() for t in types}
    metrics["unmapped_cell_types"] = [t for t in proportions.columns if t not in mapped]
    metrics["truth_groups"] = {g: list(t) for g, t in truth_groups.items()}
    return summary, metrics


def evaluate_bulk_file(proportions_path, truth_path, truth_groups: dict, bulk_path, key: str,
                       presence_threshold: float = PRESENCE_THRESHOLD, intervals_path=None) -> tuple[pd.DataFrame, dict]:
    """proportions.csv of one model on one bulk + its truth file -> (long summary, metrics).

    With ``intervals_path`` (the model's ``intervals.csv`` of this bulk) the summary gains each
    group share's ``lower`` / ``upper`` bound (``deconflow.trust.group_intervals``) and the
    metrics ``interval_coverage`` / ``interval_mean_width`` over (sample, group) pairs: measured
    on the real cohort, not tuned on it (NaN bounds, e.g. methylation models: NaN figures).
    """
    from .trust import group_intervals, interval_coverage

    proportions = read_numeric_table(proportions_path, "proportions", "rerun `snakemake --forcerun deconvolve_bulk`")
    truth = read_truth(truth_path, key=f"{key}.truth")
    check_truth(truth, truth_groups, proportions.index, proportions.columns, truth_path, bulk_path, key)
    summary, metrics = score_against_truth(proportions, truth, truth_groups, presence_threshold)
    if intervals_path is not None:
        table = pd.read_csv(intervals_path, dtype={"sample_id": str, "cell_type": str})
        bounds = group_intervals(table, proportions.loc[truth.index], truth_groups)
        summary["lower"] = [bounds.loc[s, (g, "lower")] for s, g in zip(summary["sample_id"], summary["cell_type"])]
        summary["upper"] = [bounds.loc[s, (g, "upper")] for s, g in zip(summary["sample_id"], summary["cell_type"])]
        if summary[["lower", "upper"]].notna().all().all():
            coverage, width = interval_coverage(summary["true_proportion"], summary["lower"], summary["upper"])
        else:
            coverage = width = float("nan")
        metrics.update(interval_coverage=coverage, interval_mean_width=width)
    return summary, metrics
