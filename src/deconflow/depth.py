"""What each bulk sample brings: reads and observed markers, and how far its profile lies from
the validation mixtures. Feeds the quality row (``deconflow.trust.qc_table``).

Depth
-----
``reads``: the sum of a sample's counts over the model's genes, when the values are counts (a
count format, or a table of integers); NaN for TPM/CPM or other non-integer values, which carry
no depth. ``nonzero_features``: the number of features the model's answer depends on
(``FittedModel.used_features``: NNLS its marker genes) that are non-zero in the sample. A sample
is flagged ``low_depth`` below ``min_reads`` reads on the model's genes, or when fewer than
``min_nonzero_fraction`` of those features are non-zero, and ``no_signal`` when fewer of them are
non-zero than the model has cell types (the fit is then under-determined: a one-gene sample) or
its signature fit saw no marker at all (an empty residual).

The minimum of 100,000 reads follows the case ``low-signal-samples`` (DAISM sample S1 drawn at
20 million ... 200 reads on the embedded model's 5,649 genes): 200,000 reads stay within 0.02 of
the 20-million-read estimate for every type, 20,000 reads move T cells CD4 conv from 0.30 to 0.00.
RCTD (Cable et al. 2022, Nat. Biotechnol. 40:517) likewise drops spots under ``UMI_min`` = 100.
``min_nonzero_fraction`` = 0.1: the validation mixtures of the embedded data have at least 17 %
of NNLS's markers non-zero (779 of 4,507), 2,000 reads 12 %, 200 reads 2 %.

Profile distance (a model-free out-of-distribution signal)
----------------------------------------------------------
``1 - Pearson(log1p CPM of the sample, mean log1p CPM of the validation mixtures)`` over the
used features, missing features left out (methylation: the betas themselves). Calibrated like the residuals: the sorted distances of
the validation mixtures are stored in ``calibration.json`` (with the mean profile) and a sample
beyond the largest is flagged ``profile_beyond_validation``. It is computed for models without a
signature fit of their own (Scaden; methylation ``nnls_reads``), whose quality row otherwise has
no residual. For the embedded PBMC data over all 11,180 genes (Scaden's inputs): validation mixtures
0.006-0.348, the real DAISM and PBMC bulks 0.08-0.10, the ``low-signal-samples`` case at 2,000 reads
0.51, 200 reads 0.75, one gene 0.98 (20,000 reads: 0.23, within; flagged ``low_depth``). Embedded
cfDNA atlas, ``nnls_reads``, betas: validation 0.12-0.62, the case ``hg19-sample`` on hg38 0.14, its
hg19 calls 0.99.

Methylation models with an atlas but no residual of their own (``nnls_reads``, ``sparse``) use the
*fit distance* instead (:func:`fit_distance`): ``1 - Pearson(the sample's betas, the betas its
proportions predict, atlas · p)`` over the covered regions. The distance to the validation mean
flagged real tissue and panel samples (a tissue is not a cfDNA-like mixture: pure Roadmap liver
0.97, beyond every validation mixture) as if their calls were on another genome build. The fit
distance asks what the genome-build check needs, whether the atlas explains the calls at all:
validation mixtures of the default run 0.02-0.56, the 19 real Roadmap panel samples 0.02-0.14,
``hg19-sample`` on hg38 0.06 and on hg19 0.99 (celfie tissues without a covered marker, e.g.
brain 0.93, are beyond too: their tissue cannot be fitted on those windows).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: quality-row depth settings (config ``qc``; documented above)
DEPTH_DEFAULTS = {"min_reads": 100_000, "min_nonzero_fraction": 0.1}
#: bulk formats whose values are read counts whatever their decimals (salmon's NumReads...)
COUNT_FORMATS = ("featurecounts", "htseq", "star")


def values_are_counts(values: np.ndarray) -> bool:
    """True when every finite value is a non-negative integer (a count table)."""
    finite = values[np.isfinite(values)]
    return finite.size > 0 and bool(np.all(finite >= 0)) and bool(np.all(finite == np.round(finite)))


def sample_depth(bulk: pd.DataFrame, model, counts: bool | None = None) -> pd.DataFrame:
    """``reads`` and ``nonzero_features`` per sample (index: the bulk's columns).

    ``bulk``: features x samples in linear space, rows named by model features (others ignored);
    ``counts``: whether the values are read counts (None: decided by :func:`values_are_counts`)."""
    features = pd.Index(model.feature_names)
    shared = bulk.index.intersection(features)
    values = bulk.loc[shared].to_numpy(dtype=np.float64)
    used = features[model.used_features()]
    used_values = bulk.reindex(used).to_numpy(dtype=np.float64)
    if counts is None:
        counts = values_are_counts(values)
    reads = np.nansum(values, axis=0) if counts else np.full(bulk.shape[1], np.nan)
    nonzero = (np.nan_to_num(used_values) > 0).sum(axis=0)
    return pd.DataFrame({"reads": reads, "nonzero_features": nonzero.astype(np.int64)}, index=bulk.columns.astype(str))


def log_depth(depth: pd.DataFrame, n_used: int, source, settings: dict | None = None) -> None:
    """One line with every sample's reads (or non-zero markers), and a warning naming the samples
    below the minimum."""
    settings = {**DEPTH_DEFAULTS, **(settings or {})}
    shown = ", ".join(f"{s} {int(r):,} reads" if np.isfinite(r) else f"{s} {n}/{n_used} markers non-zero"
                      for s, r, n in zip(depth.index[:20], depth["reads"][:20], depth["nonzero_features"][:20]))
    log.info("%s: per sample on the model's genes: %s%s", source, shown, " ..." if len(depth) > 20 else "")
    low = depth.index[low_depth(depth, n_used, settings)].tolist()
    if low:
        log.warning("%s: samples %s are below the minimum depth (%s reads on the model's genes, or %.0f %% of the %d genes it "
                    "uses non-zero): their fractions are unreliable (qc.csv flag low_depth)", source, low[:10],
                    f"{settings['min_reads']:,}", 100 * settings["min_nonzero_fraction"], n_used)


def low_depth(depth: pd.DataFrame, n_used: int, settings: dict | None = None) -> np.ndarray:
    settings = {**DEPTH_DEFAULTS, **(settings or {})}
    reads = depth["reads"].to_numpy(dtype=np.float64)
    nonzero = depth["nonzero_features"].to_numpy(dtype=np.float64)
    return (np.isfinite(reads) & (reads < settings["min_reads"])) | (nonzero < settings["min_nonzero_fraction"] * n_used)


def log_profiles(features: np.ndarray, used: np.ndarray, normalization: str = "cpm") -> np.ndarray:
    """log1p CPM over ``used`` (samples x used features); missing features NaN, the CPM over the
    observed ones. Methylation (``beta``): the betas themselves."""
    X = np.atleast_2d(np.asarray(features, dtype=np.float64))[:, used]
    if normalization == "beta":
        return X
    observed = np.isfinite(X)
    filled = np.where(observed, np.clip(X, 0.0, None), 0.0)
    totals = filled.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cpm = np.where(totals > 0, filled / totals * 1e6, 0.0)
    return np.where(observed, np.log1p(cpm), np.nan)


def profile_distance(profiles: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation of each row of ``profiles`` with ``reference`` over the features
    observed in both (NaN when fewer than 3 are, or a row is constant)."""
    reference = np.asarray(reference, dtype=np.float64)
    out = np.full(len(profiles), np.nan)
    for i, row in enumerate(profiles):
        both = np.isfinite(row) & np.isfinite(reference)
        if both.sum() < 3:
            continue
        a, b = row[both] - row[both].mean(), reference[both] - reference[both].mean()
        denominator = np.sqrt((a * a).sum() * (b * b).sum())
        out[i] = 1.0 - (a * b).sum() / denominator if denominator > 0 else 1.0
    return out


def fit_distance(features: np.ndarray, fitted: np.ndarray, used: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation of each sample's betas with its fitted betas (both samples x
    features; ``used``: the model's features), over the features observed in both (NaN when
    fewer than 3 are, or a row is constant: see :func:`profile_distance`)."""
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))[:, used]
    fitted = np.atleast_2d(np.asarray(fitted, dtype=np.float64))[:, used]
    return np.array([profile_distance(row[None, :], reference)[0] for row, reference in zip(features, fitted)])


def fit_calibration(features: np.ndarray, fitted: np.ndarray, used: np.ndarray) -> dict:
    """``validation_fit_distances``: the sorted :func:`fit_distance` of the validation mixtures,
    for ``calibration.json`` (methylation models with an atlas and no residual of their own)."""
    distances = fit_distance(features, fitted, used)
    return {"validation_fit_distances": np.sort(distances[np.isfinite(distances)]).tolist()}


def profile_calibration(features: np.ndarray, used: np.ndarray, normalization: str = "cpm") -> dict:
    """``validation_profile`` (mean log1p CPM over the used features) and the sorted
    ``validation_profile_distances`` of the validation mixtures, for ``calibration.json``."""
    profiles = log_profiles(features, used, normalization)
    reference = np.nanmean(profiles, axis=0)
    distances = profile_distance(profiles, reference)
    return {"validation_profile": np.round(reference, 6).tolist(),
            "validation_profile_distances": np.sort(distances[np.isfinite(distances)]).tolist()}
