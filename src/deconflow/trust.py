"""Per-sample trust: calibrated intervals and a quality row for every deconvolved sample.

Intervals: split-conformal prediction, normalised by a per-sample spread
--------------------------------------------------------------------------
For a sample x with estimate p̂ (samples x cell types) the *spread* σ̂_k(x) is the standard
deviation of the model's estimate of type k over ``replicates`` gene-masked copies of x: each
replicate hides a random ``gene_drop_fraction`` of the model's features (the same mask for every
sample of a replicate, seeded), and the model predicts as it does for genes a bulk lacks
(NNLS drops those rows, HP-VADE's encoder reads them at their training mean and its NNLS priors
drop them, Scaden fills the training-mean CPM). It is a delete-d jackknife over genes: how much
the answer rests on particular genes.

σ̂ alone is not a calibrated error (it misses bias). The normalised conformal score
s = |y - p̂| / (σ̂ + floor) is computed for every (mixture, type) pair of the validation mixtures
(known truth, cells never used for training; HP-VADE's stacking, fitted on them, is cross-fitted
for this, ``FittedModel.held_out_estimates``) and stored sorted in ``calibration.json``; an
interval at level α is p̂_k ± q·(σ̂_k + floor), q the ⌈(n+1)·α⌉-th smallest of the n scores,
clipped to [0, 1]. Split conformal (Vovk et al. 2005, *Algorithmic Learning in a Random World*;
Lei et al. 2018, JASA 113:1094, "Distribution-free predictive inference for regression",
Section 5.2 for the normalised score) guarantees coverage ≥ α over (sample, type) pairs when the
samples are exchangeable with the validation mixtures. One quantile for all types, not one per
type: the coverage promised is over pairs, and a per-type quantile of a rare type rests on the
handful of its cells in the validation pool (268 cells in all in the embedded data), whose
idiosyncrasies the test pool does not share. Held-out test mixtures come from other cells, so
they are only nearly exchangeable; their coverage is measured (``interval_coverage``), as is a
real bulk's (bulk evaluation: another protocol, not exchangeable at all). Test mixtures are never
used to calibrate.

Quality row (``qc.csv``)
------------------------
Per sample: the share of the features the model uses that the bulk has; the relative residual
of the model's own signature fit (``FittedModel.relative_residual``: NNLS its weighted marker
fit, HP-VADE its all-gene fit, the one its out-of-distribution test uses; NaN for models without
a signature fit, e.g. Scaden) and its percentile among the validation mixtures' residuals;
whether a fallback or correction was applied; ``adaptation``: how the model was adapted to the
cohort before answering the sample (``platform``: per-gene platform factors and the genes the bulk
has; ``genes_only``: a cohort too small for factors, only the genes; ``none``: not adapted, e.g.
off, a sample within the trained model's own distribution, or a model without an adaptation step;
``deconflow.models.adaptation``); for RNA models the fraction of cells of no
reference type with its interval (``other_cells``, ``other_cells_lower``, ``other_cells_upper``:
``deconflow.other_cells``); and ``flag``: ``;``-separated reasons
(``low_overlap``, ``residual_beyond_validation``, ``ood_fallback``, ``implausible_<type>``, ``cells_outside_reference``).
Depth and signal (``deconflow.depth``): ``reads`` on the model's genes and ``nonzero_features``
(of those the model uses) per sample, flagged ``low_depth`` below ``qc.min_reads`` /
``qc.min_nonzero_fraction``, ``no_signal`` when fewer markers are observed than the model has
cell types or its signature fit saw none (an empty residual); for models without a signature fit
(Scaden) the ``profile_distance`` to the validation mixtures, flagged
``profile_beyond_validation`` beyond all of theirs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DeconflowError
from .depth import DEPTH_DEFAULTS, fit_calibration, fit_distance, log_profiles, low_depth, profile_calibration, profile_distance
from .evaluation import features_for_model
from .io import read_mixtures, write_json
from .io.files import read_json
from .models import load_model
from .threads import with_fixed_threads

#: Interval settings (config ``intervals``); all but ``level`` are fixed at calibration.
INTERVAL_DEFAULTS = {"level": 0.9, "replicates": 10, "gene_drop_fraction": 0.25, "spread_floor": 0.005}
#: Quality-row settings (config ``qc``).
QC_DEFAULTS = {"min_overlap_fraction": 0.5, **DEPTH_DEFAULTS}
CALIBRATION_FORMAT = 2
#: rows (samples x replicates) handed to the model at once: batched models amortise their fixed
#: per-call cost (HP-VADE's NNLS iterations), NNLS solves each mask's rows with one design
REPLICATE_CHUNK_ROWS = 4096
QC_COLUMNS = ["sample_id", "feature_overlap", "relative_residual", "residual_percentile", "fallback", "adaptation", "cell_mrna",
              "flag"]
#: depth columns of the quality row (``deconflow.depth``), after QC_COLUMNS
DEPTH_COLUMNS = ["reads", "nonzero_features", "profile_distance"]
#: RNA models' qc rows also hold the fraction of cells of no reference type (``deconflow.other_cells``)
OTHER_CELLS_COLUMNS = ["other_cells", "other_cells_lower", "other_cells_upper"]
OTHER_CELLS_FLAG = "cells_outside_reference"


def gene_masks(n_features: int, replicates: int, drop_fraction: float, seed: int) -> np.ndarray:
    """(replicates x features) bool, True = kept; exactly round(drop_fraction·n) features hidden
    per replicate, drawn from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    n_drop = int(round(drop_fraction * n_features))
    masks = np.ones((replicates, n_features), dtype=bool)
    for r in range(replicates):
        masks[r, rng.choice(n_features, size=n_drop, replace=False)] = False
    return masks


def replicate_spread(model, features: np.ndarray, masks: np.ndarray, convert=None) -> np.ndarray:
    """Standard deviation (samples x types) of the model's estimates over gene-masked replicates.

    ``features``: samples x model features (NaN = not measured); ``convert``: optional function
    applied to each replicate's proportions (e.g. the bulk's ``cell_mrna`` conversion), so the
    spread is on the scale of the reported estimate.
    """
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    n_samples, n_types = features.shape[0], len(model.cell_types)
    total = np.zeros((n_samples, n_types))
    total_sq = np.zeros_like(total)
    per_chunk = max(1, REPLICATE_CHUNK_ROWS // max(n_samples, 1))  # replicates predicted in one call
    for start in range(0, len(masks), per_chunk):
        chunk = masks[start : start + per_chunk]
        stacked = np.repeat(features[None, :, :], len(chunk), axis=0)
        stacked[~np.repeat(chunk[:, None, :], n_samples, axis=1)] = np.nan
        p = model.predict_quiet(stacked.reshape(-1, features.shape[1]))
        del stacked
        if convert is not None:
            p = convert(p)
        p = p.reshape(len(chunk), n_samples, n_types)
        total += p.sum(axis=0)
        total_sq += (p * p).sum(axis=0)
    n = len(masks)
    variance = (total_sq - total * total / n) / max(n - 1, 1)
    return np.sqrt(np.clip(variance, 0.0, None))


def conformal_scores(truth: np.ndarray, estimate: np.ndarray, spread: np.ndarray, floor: float) -> np.ndarray:
    """Normalised scores |y - p̂| / (σ̂ + floor), samples x types."""
    return np.abs(np.asarray(truth, dtype=np.float64) - estimate) / (spread + floor)


def conformal_quantile(scores, level: float) -> float:
    """The ⌈(n+1)·level⌉-th smallest of n scores (inf when that exceeds n: too few to say)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(scores)
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    rank = math.ceil((n + 1) * level)
    return float("inf") if rank > n else float(scores[rank - 1])


def interval_coverage(truth: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[float, float]:
    """(share of (sample, type) pairs with lower ≤ truth ≤ upper, mean width upper - lower)."""
    truth, lower, upper = (np.asarray(a, dtype=np.float64) for a in (truth, lower, upper))
    covered = (truth >= lower) & (truth <= upper)
    return float(covered.mean()), float((upper - lower).mean())


# --------------------------------------------------------------------------- calibration
def calibrate(model, features: np.ndarray, truth: np.ndarray, settings: dict | None = None, seed: int = 0) -> dict:
    """Calibration of ``model`` from validation mixtures (features aligned to the model, truth
    samples x types): the sorted conformal scores of every (mixture, type) pair, the sorted
    validation residuals and the replicate settings. JSON-serialisable; written next to the checkpoint (``calibration.json``)."""
    settings = {**INTERVAL_DEFAULTS, **(settings or {})}
    features = np.asarray(features, dtype=np.float64)
    estimate = model.held_out_estimates(features, truth)
    masks = gene_masks(len(model.feature_names), int(settings["replicates"]), float(settings["gene_drop_fraction"]), seed)
    spread = replicate_spread(model, features, masks)
    scores = conformal_scores(truth, estimate, spread, float(settings["spread_floor"]))
    residual = model.relative_residual(features)
    profile = {}
    if residual is None:
        atlas = model.atlas_betas()
        profile = (profile_calibration(features, model.used_features(), model.normalization) if atlas is None
                   else fit_calibration(features, fitted_betas(atlas, estimate), model.used_features()))
    return {
        **profile,
        "format": CALIBRATION_FORMAT,
        "model": model.name,
        "cell_types": [str(t) for t in model.cell_types],
        "n_features": len(model.feature_names),
        "n_validation": int(features.shape[0]),
        "seed": int(seed),
        "replicates": int(settings["replicates"]),
        "gene_drop_fraction": float(settings["gene_drop_fraction"]),
        "spread_floor": float(settings["spread_floor"]),
        "scores": np.sort(scores.ravel()).tolist(),
        "validation_residuals": None if residual is None else np.sort(residual).tolist(),
    }


@with_fixed_threads
def calibrate_file(model_path, val_path, out_path, settings: dict | None = None, seed: int = 0) -> dict:
    """Checkpoint + validation mixtures (``pseudobulk/val.h5``) -> ``calibration.json``."""
    model = load_model(model_path)
    val = read_mixtures(val_path, expect_normalization=model.normalization)
    calibration = calibrate(model, features_for_model(val, model), val.proportions, settings, seed)
    write_json(calibration, out_path)
    return calibration


def default_calibration_path(model_path) -> Path:
    return Path(model_path).with_name("calibration.json")


def read_calibration(path, model) -> dict:
    """A ``calibration.json`` checked against the model it is applied with."""
    path = Path(path)
    fix = "run `snakemake results/<dataset>/models/<model>/calibration.json`, or pass the model's --calibration"
    calibration = read_json(path, "calibration file for the intervals", fix)
    if calibration.get("format") != CALIBRATION_FORMAT or calibration.get("model") != model.name \
            or calibration.get("cell_types") != [str(t) for t in model.cell_types] \
            or calibration.get("n_features") != len(model.feature_names):
        raise DeconflowError(path, f"calibration was made for another model (model {calibration.get('model')!r}, "
                                   f"{len(calibration.get('cell_types') or [])} cell types) than {model.name!r}", fix)
    return calibration


# --------------------------------------------------------------------------- intervals
def intervals(model, features: np.ndarray, calibration: dict, level: float, estimate: np.ndarray | None = None,
              convert=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, lower, upper), samples x types, at ``level`` from a calibration.

    ``estimate`` defaults to the model's prediction (then ``convert`` applied); pass the one
    already reported so the two cannot differ.
    """
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    if estimate is None:
        estimate = model.predict_quiet(features)
        if convert is not None:
            estimate = convert(estimate)
    masks = gene_masks(len(model.feature_names), calibration["replicates"], calibration["gene_drop_fraction"], calibration["seed"])
    spread = replicate_spread(model, features, masks, convert)
    half = conformal_quantile(calibration["scores"], level) * (spread + calibration["spread_floor"])
    return estimate, np.clip(estimate - half, 0.0, 1.0), np.clip(estimate + half, 0.0, 1.0)


def interval_table(sample_ids, cell_types, estimate, lower, upper) -> pd.DataFrame:
    """Long form: sample_id, cell_type, estimate, lower, upper."""
    sample_ids = np.asarray(sample_ids).astype(str)
    cell_types = np.asarray(cell_types).astype(str)
    n, k = np.asarray(estimate).shape
    return pd.DataFrame({"sample_id": np.repeat(sample_ids, k), "cell_type": np.tile(cell_types, n),
                         "estimate": np.ravel(estimate), "lower": np.ravel(lower), "upper": np.ravel(upper)})


def evaluate_intervals(model, features: np.ndarray, truth: np.ndarray, calibration_path, level: float) -> dict:
    """``interval_level``, ``interval_coverage``, ``interval_mean_width`` on mixtures with truth."""
    calibration = read_calibration(calibration_path, model)
    _, lower, upper = intervals(model, features, calibration, level)
    coverage, width = interval_coverage(truth, lower, upper)
    covered = (truth >= lower) & (truth <= upper)
    return {"interval_level": float(level), "interval_coverage": coverage, "interval_mean_width": width,
            "interval_coverage_per_type": {str(t): float(c) for t, c in zip(model.cell_types, covered.mean(axis=0))}}


@with_fixed_threads
def evaluate_intervals_file(model_path, test_path, calibration_path, level: float) -> dict:
    """Interval metrics of a checkpoint on held-out mixtures (``pseudobulk/test.h5``)."""
    model = load_model(model_path)
    test = read_mixtures(test_path, expect_normalization=model.normalization)
    return evaluate_intervals(model, features_for_model(test, model), test.proportions, calibration_path, level)


def group_intervals(intervals_table: pd.DataFrame, proportions: pd.DataFrame, truth_groups: dict) -> pd.DataFrame:
    """Interval bounds of each truth group's share, samples x (group, "lower"/"upper").

    A group's bounds are the sums of its types' bounds divided by the sample's total estimate
    over the mapped types (the renormalisation of ``deconflow.truth.score_against_truth``, held
    fixed), clipped to [0, 1]. Summing per-type bounds is conservative for a group of several
    types; it is what can be said without a group-level calibration (groups are the bulk's).
    """
    lower = intervals_table.pivot(index="sample_id", columns="cell_type", values="lower")
    upper = intervals_table.pivot(index="sample_id", columns="cell_type", values="upper")
    lower.index, upper.index = lower.index.astype(str), upper.index.astype(str)
    mapped = [t for types in truth_groups.values() for t in types]
    total = proportions.loc[:, mapped].sum(axis=1)
    total = total.where(total > 0, 1.0)
    out = {}
    for group, types in truth_groups.items():
        out[(group, "lower")] = (lower.loc[proportions.index, list(types)].sum(axis=1) / total).clip(0, 1)
        out[(group, "upper")] = (upper.loc[proportions.index, list(types)].sum(axis=1) / total).clip(0, 1)
    return pd.DataFrame(out, index=proportions.index)


# --------------------------------------------------------------------------- quality rows
def parse_plausible(ranges: dict | None, cell_types, source=None) -> dict[str, tuple[float, float]]:
    """``{type: [low, high]}`` checked against the model's types (0 ≤ low ≤ high ≤ 1)."""
    out = {}
    for cell_type, bounds in (ranges or {}).items():
        if str(cell_type) not in set(map(str, cell_types)):
            raise DeconflowError(source, f"plausible_fractions names {cell_type!r}, not a cell type of the model",
                                 f"use the model's names {list(map(str, cell_types))}")
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise DeconflowError(source, f"plausible_fractions of {cell_type!r} is {bounds!r}",
                                 "give two numbers [low, high] between 0 and 1") from None
        if not 0 <= low <= high <= 1:
            raise DeconflowError(source, f"plausible_fractions of {cell_type!r} is [{low}, {high}]",
                                 "give 0 ≤ low ≤ high ≤ 1")
        out[str(cell_type)] = (low, high)
    return out


def qc_table(model, features: np.ndarray, sample_ids, proportions: np.ndarray, calibration: dict | None,
             cell_mrna_applied: bool, plausible: dict | None = None, min_overlap_fraction: float = 0.5,
             depth: pd.DataFrame | None = None, depth_settings: dict | None = None) -> pd.DataFrame:
    """One row per sample (``QC_COLUMNS`` + ``DEPTH_COLUMNS``); see the module docstring.
    ``depth``: ``deconflow.depth.sample_depth`` of the bulk (None: reads unknown, the non-zero
    features counted in ``features``)."""
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    used = model.used_features()
    overlap = np.isfinite(features[:, used]).mean(axis=1)
    residual = model.relative_residual(features)
    has_fit = residual is not None
    residual = np.full(len(features), np.nan) if residual is None else residual
    if depth is None:
        seen = np.isfinite(features[:, used]) if model.normalization == "beta" else np.nan_to_num(features[:, used]) > 0
        depth = pd.DataFrame({"reads": np.nan, "nonzero_features": seen.sum(axis=1)})
    reads = depth["reads"].to_numpy(dtype=np.float64)
    nonzero = depth["nonzero_features"].to_numpy(dtype=np.int64)
    thin = low_depth(depth, len(used), depth_settings)
    no_signal = (nonzero < len(model.cell_types)) | (has_fit & ~np.isfinite(residual))
    distance = np.full(len(features), np.nan)
    profile_beyond = np.zeros(len(features), dtype=bool)
    atlas, calibration_key = model.atlas_betas(), None
    if calibration and calibration.get("validation_fit_distances") and atlas is not None:
        distance, calibration_key = fit_distance(features, fitted_betas(atlas, proportions), used), "validation_fit_distances"
    elif calibration and calibration.get("validation_profile_distances"):
        distance = profile_distance(log_profiles(features, used, model.normalization),
                                    np.asarray(calibration["validation_profile"], dtype=np.float64))
        calibration_key = "validation_profile_distances"
    if calibration_key:
        profile_beyond = ~(distance <= calibration[calibration_key][-1])
    reference = None if calibration is None else calibration.get("validation_residuals")
    if reference:
        reference = np.asarray(reference, dtype=np.float64)
        percentile = 100.0 * np.searchsorted(reference, residual, side="right") / len(reference)
        percentile = np.where(np.isfinite(residual), percentile, np.nan)
        beyond = np.isfinite(residual) & (residual > reference[-1])
    else:
        percentile = np.full(len(features), np.nan)
        beyond = np.zeros(len(features), dtype=bool)
    fallback = model.fallback_rows(features)
    plausible = plausible or {}
    type_index = {str(t): k for k, t in enumerate(model.cell_types)}
    flags = []
    for i in range(len(features)):
        reasons = []
        if overlap[i] < min_overlap_fraction:
            reasons.append("low_overlap")
        if thin[i]:
            reasons.append("low_depth")
        if no_signal[i]:
            reasons.append("no_signal")
        if profile_beyond[i]:
            reasons.append("profile_beyond_validation")
        if beyond[i]:
            reasons.append("residual_beyond_validation")
        if fallback[i]:
            reasons.append("ood_fallback")
        for cell_type, (low, high) in plausible.items():
            value = proportions[i, type_index[cell_type]]
            if value < low or value > high:
                reasons.append(f"implausible_{cell_type}")
        flags.append(";".join(reasons))
    return pd.DataFrame({"sample_id": np.asarray(sample_ids).astype(str), "feature_overlap": overlap,
                         "relative_residual": residual, "residual_percentile": percentile,
                         "fallback": fallback.astype(bool), "adaptation": np.asarray(model.adaptation_kinds(features)).astype(str),
                         "cell_mrna": bool(cell_mrna_applied), "flag": flags,
                         "reads": reads, "nonzero_features": nonzero, "profile_distance": distance},
                        columns=QC_COLUMNS + DEPTH_COLUMNS)


def warn_genome_build(qc: pd.DataFrame, calibration: dict | None) -> None:
    """Warn for methylation samples whose fit (or profile) is beyond every validation mixture's:
    with calls of a sound sample that happens most often when they are on another genome build
    than the atlas (each atlas window then holds CpGs of an unrelated locus; Loyfer's meth_atlas
    issue #4). Without a calibration, say that nothing could be checked."""
    if calibration is None:
        logging.getLogger(__name__).info("no calibration.json for this methylation model: residuals are not compared "
                                         "with validation mixtures (run rule calibrate_model)")
        return
    beyond = qc["flag"].str.contains("residual_beyond_validation|profile_beyond_validation", regex=True)
    if beyond.any():
        by_residual = bool(calibration.get("validation_residuals"))
        reference = (calibration.get("validation_residuals") or calibration.get("validation_fit_distances")
                     or calibration.get("validation_profile_distances") or [np.nan])
        column = "relative_residual" if by_residual else "profile_distance"
        logging.getLogger(__name__).warning(
            "samples %s fit the atlas worse than every validation mixture (" + column.replace("_", " ") + " %s; validation at most %.3g): "
            "the calls may be on another genome build than the atlas (embedded atlas: hg38): check the alignment reference "
            "(or lift the calls over); otherwise the sample holds tissues the atlas lacks, or whose marker regions "
            "the covered regions do not include (no_evidence_types in qc.csv)", qc.loc[beyond, "sample_id"].tolist()[:10],
            ", ".join(f"{v:.3g}" for v in qc.loc[beyond, column].tolist()[:10]), reference[-1])


def fitted_betas(atlas: np.ndarray, proportions: np.ndarray) -> np.ndarray:
    """Samples x regions betas the proportions predict, atlas (regions x types) · p (types
    without evidence, NaN, count as 0)."""
    return np.nan_to_num(np.atleast_2d(np.asarray(proportions, dtype=np.float64))) @ np.asarray(atlas, dtype=np.float64).T


def add_other_cells(qc: pd.DataFrame, other_cells: pd.DataFrame) -> pd.DataFrame:
    """``qc_table``'s rows with the fraction of cells of no reference type: the estimate and its
    bounds (rows of ``deconflow.other_cells.other_cells_table``, same sample order) as columns
    before ``flag``, and the reason ``cells_outside_reference`` where it is flagged."""
    qc = qc.copy()
    for name in OTHER_CELLS_COLUMNS:
        qc.insert(qc.columns.get_loc("flag"), name, other_cells[name].to_numpy(dtype=np.float64))
    flagged = other_cells[OTHER_CELLS_FLAG].to_numpy(dtype=bool)
    qc["flag"] = [";".join(filter(None, [reasons, OTHER_CELLS_FLAG if flag else ""]))
                  for reasons, flag in zip(qc["flag"], flagged)]
    return qc


def trust_tables(model, features: np.ndarray, sample_ids, proportions: np.ndarray, *,
                 calibration_path=None, level: float | None = None, qc: bool = False, convert=None,
                 cell_mrna_applied: bool = False, plausible: dict | None = None,
                 min_overlap_fraction: float = QC_DEFAULTS["min_overlap_fraction"], depth: pd.DataFrame | None = None,
                 depth_settings: dict | None = None,
                 other_cells: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """``{"intervals": table}`` (when ``level``) and ``{"qc": table}`` (when ``qc``), for
    ``deconvolve_file`` to write as ``intervals.csv`` / ``qc.csv`` next to the proportions.

    Both the Snakemake rule and ``deconflow deconvolve --intervals/--qc`` go through this, so the
    files are the same bytes. ``proportions`` is the reported table (after ``convert``). Models
    without a calibration (methylation models) get NaN bounds and no residual percentile.
    """
    tables = {}
    calibration = None
    if calibration_path is not None and Path(calibration_path).is_file():
        calibration = read_calibration(calibration_path, model)
    if level is not None:
        if not 0 < float(level) < 1:
            raise DeconflowError(None, f"interval level {level} is not between 0 and 1", "give e.g. --intervals 0.9")
        if calibration is None or model.normalization == "beta":  # methylation: calibrated for the quality row only
            if model.normalization == "cpm":  # RNA models are always calibrated by the pipeline
                read_calibration(calibration_path or "calibration.json", model)  # raises with the fix
            lower = upper = np.full_like(proportions, np.nan)
        else:
            _, lower, upper = intervals(model, features, calibration, float(level), estimate=proportions, convert=convert)
        tables["intervals"] = interval_table(sample_ids, model.cell_types, proportions, lower, upper)
    if qc:
        tables["qc"] = qc_table(model, features, sample_ids, proportions, calibration, cell_mrna_applied, plausible,
                                min_overlap_fraction, depth, depth_settings)
        if model.normalization == "beta":
            warn_genome_build(tables["qc"], calibration)
        if other_cells is not None:  # cells of no reference type (deconflow.other_cells)
            tables["qc"] = add_other_cells(tables["qc"], other_cells)
    return tables
