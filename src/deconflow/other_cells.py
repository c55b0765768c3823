"""Cells of no reference type ("other cells"): their fraction per bulk sample, a calibrated
interval, a flag, and absolute cell fractions.

A reference never holds every cell of a sample (neutrophils in whole blood, tumour cells in a
biopsy). Every RNA model's fractions sum to 1 over the reference's types, so such cells are
handed to the types that look closest. This module estimates their share from the bulk and
the reference's signature alone, the same for every model of a dataset (the models' softmax
outputs have no notion of it).

Method: the mRNA mass the reference explains (EPIC, Racle et al. 2017, eLife 6:e26476)
------------------------------------------------------------------------------------------
A bulk in CPM is x = Σ_k m_k·S_k + a·s_u: m_k the mRNA share of reference type k (S_k its mean
CPM profile), a the share of the cells the reference lacks, with an unknown profile s_u ≥ 0.
Without the sum-to-one constraint, a fit of x on the reference's marker genes gives m̂; where the
other cells express none of those genes (EPIC's assumption) Σ_k m̂_k = 1 - a exactly. Here:

- **genes**: strictly specific marker genes, the ``marker_genes_per_type`` genes per type with at
  least ``min_marker_cpm`` in the type and log2(CPM + 1) at least ``min_log2_fold_change`` above
  every other type (ranked by that difference). The linear fit's marker sets (ranked the same way
  but without the bound) carry 65-84 % of every type's CPM, so any cell type expresses them and
  the fit explains other cells with the reference's types (docs/other-cells.md). Genes a bulk
  lacks are dropped, and the known mass is counted over the genes the bulk has
  (``Σ_k m̂_k·Σ_{g observed} S_gk / 10⁶``; the other cells are assumed to hold as much of their
  mRNA there as the reference's types on average), so a bulk missing genes is not read as other
  cells. ``scale_genes: housekeeping`` counts shares of genes every type expresses (at least
  ``housekeeping_min_cpm``, within ``housekeeping_max_ratio``-fold, no MT-/ribosomal-protein
  genes) instead of the bulk's CPM;
- **weights**: each gene's squared residual weighted by 1 / ((S·m̂)_g + ``weight_offset_cpm``), the
  Poisson variance of the fitted CPM (iteratively reweighted; the first round uses the types' mean
  CPM): unlike the linear fit's relative weights (1/(mean + offset)²), which fit proportions well
  but not their total, this keeps the fitted mass of validation mixtures at 1.00
  (docs/other-cells.md); bulk genes beyond any mixture (``linear_fit.max_bulk_ratio``) are capped
  as in the linear fit;
- **envelope** (``envelope_weight`` κ ≥ 1): other cells only ever *add* mRNA, so S·m should lie
  below x. κ > 1 weights genes where the fit overshoots the bulk κ times (an expectile fit, by
  the same reweighted NNLS): types related to the missing one can then
  absorb less of it. κ = 1 is the symmetric (Poisson-weighted) fit. Larger κ sees more of a held-out type but
  reads another protocol's per-gene differences as other cells (the measured trade-off is in
  docs/other-cells.md; ``make bench-other-cells``);
- **cells**: shares of mRNA become shares of cells with the reference's mRNA per cell L_k (mean
  library size, as the linear fit does) and, for the other cells, ``unknown_library_size``
  (``median``: the median of the reference types'; EPIC likewise assumes a fixed mRNA content for
  its "other cells"): other_cells = (a/L_u) / (a/L_u + Σ_k m_k/L_k).

Interval and flag
-----------------
Split conformal, as ``deconflow.trust`` calibrates the per-type intervals, but on validation
mixtures built for it: each reference type in turn is held out of the signature (its marker
genes re-chosen from the others) and mixed into mixtures of the validation pool's cells at a
cell fraction drawn uniformly from [0, ``max_unknown``] (``mixtures_per_type`` per type, the
other types' fractions and the cells per mixture as the pipeline's pseudobulk draws them). Scores
|u - û| / (σ̂ + floor), σ̂ the spread of û over the same gene-masked replicates as the other
intervals (``intervals`` settings); the interval at level α is û ± q·(σ̂ + floor), clipped to
[0, 1]. ``cells_outside_reference`` is flagged when the lower bound exceeds ``flag_min_fraction``.

Absolute fractions (``absolute_fractions``): each reference type's fraction times
(1 - other_cells), plus a column ``other cells``; rows sum to 1.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from .errors import DeconflowError
from .io import atomic_path
from .io.files import read_json
from .threads import with_fixed_threads
from .trust import INTERVAL_DEFAULTS, OTHER_CELLS_COLUMNS, OTHER_CELLS_FLAG, conformal_quantile, gene_masks

log = logging.getLogger(__name__)

#: Settings (config ``other_cells``). All but ``absolute_fractions`` are fixed at calibration.
OTHER_CELLS_DEFAULTS = {
    "marker_genes_per_type": 100,
    "min_log2_fold_change": 3.0,
    "min_marker_cpm": 10.0,
    "envelope_weight": 5.0,
    "scale_genes": "all",
    "housekeeping_min_cpm": 5.0,
    "housekeeping_max_ratio": 10.0,
    "weight_offset_cpm": 10.0,
    "iterations": 8,
    "unknown_library_size": "median",
    "max_unknown": 0.7,
    "mixtures_per_type": 40,
    "flag_min_fraction": 0.05,
    "absolute_fractions": False,
}
#: the settings written into (and read back from) the calibration file
CALIBRATION_SETTINGS = ("marker_genes_per_type", "min_log2_fold_change", "min_marker_cpm", "envelope_weight", "scale_genes",
                        "housekeeping_min_cpm", "housekeeping_max_ratio", "weight_offset_cpm", "iterations",
                        "unknown_library_size", "max_unknown", "mixtures_per_type", "flag_min_fraction")
OTHER_CELLS_FORMAT = 1
#: the column of the absolute fractions that holds the other cells
OTHER_COLUMN = "other cells"
CPM_TOTAL = 1e6


class OtherCellsFit:
    """The unconstrained marker-gene fit of the module docstring, for one signature.

    ``signature``: genes x types mean CPM (every feature of the model, columns summing to ~10⁶);
    ``rows``: indices of the marker genes; ``library_size``: mean UMIs per cell of each type;
    ``unknown_library_size``: the other cells' (same unit); ``max_bulk_ratio``: the linear fit's
    cap (None: none).
    """

    def __init__(self, genes, cell_types, signature: np.ndarray, rows: np.ndarray, library_size: np.ndarray,
                 unknown_library_size: float, envelope_weight: float = 1.0, weight_offset_cpm: float = 10.0,
                 iterations: int = 8, max_bulk_ratio: float | None = None, housekeeping: np.ndarray | None = None):
        self.genes = np.asarray(genes).astype(str)
        self.cell_types = np.asarray(cell_types).astype(str)
        self.signature = np.asarray(signature, dtype=np.float64)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.library_size = np.asarray(library_size, dtype=np.float64)
        self.unknown_library_size = float(unknown_library_size)
        self.envelope_weight = float(envelope_weight)
        self.weight_offset_cpm = float(weight_offset_cpm)
        self.iterations = int(iterations)
        self.max_bulk_ratio = None if max_bulk_ratio is None else float(max_bulk_ratio)
        # indices of the genes the bulk and the profiles are scaled by (None: every observed gene)
        self.housekeeping = None if housekeeping is None else np.asarray(housekeeping, dtype=np.int64)
        if self.envelope_weight < 1:
            raise ValueError(f"envelope_weight must be >= 1, got {envelope_weight}")
        marker = self.signature[self.rows]
        self.gene_weight = 1.0 / (marker.mean(axis=1) + self.weight_offset_cpm)
        self.bound = None if self.max_bulk_ratio is None else self.max_bulk_ratio * marker.max(axis=1)

    @classmethod
    def from_signature(cls, signature: pd.DataFrame, library_size, settings: dict | None = None,
                       linear_fit: dict | None = None) -> "OtherCellsFit":
        """The fit for ``signature`` (genes x types CPM) on its specific marker genes
        (:func:`specific_marker_rows`); of ``linear_fit`` (defaults
        ``deconflow.models.nnls.LINEAR_FIT_DEFAULTS``) only the cap ``max_bulk_ratio`` is used."""
        from .models.nnls import LINEAR_FIT_DEFAULTS

        settings = {**OTHER_CELLS_DEFAULTS, **(settings or {})}
        linear_fit = {**LINEAR_FIT_DEFAULTS, **(linear_fit or {})}
        rows = specific_marker_rows(signature.to_numpy(dtype=np.float64), int(settings["marker_genes_per_type"]),
                                    float(settings["min_log2_fold_change"]), float(settings["min_marker_cpm"]),
                                    [str(t) for t in signature.columns], strict=False)
        library_size = np.asarray(library_size, dtype=np.float64)
        if settings["scale_genes"] not in ("all", "housekeeping"):
            raise ValueError(f"other_cells.scale_genes must be 'all' or 'housekeeping', got {settings['scale_genes']!r}")
        housekeeping = None
        if settings["scale_genes"] == "housekeeping":
            housekeeping = housekeeping_rows(signature, float(settings["housekeeping_min_cpm"]),
                                             float(settings["housekeeping_max_ratio"]))
        return cls(signature.index, signature.columns, signature.to_numpy(dtype=np.float64), rows, library_size,
                   unknown_size(settings["unknown_library_size"], library_size), settings["envelope_weight"],
                   settings["weight_offset_cpm"], settings["iterations"], linear_fit.get("max_bulk_ratio"), housekeeping)

    # ---------------------------------------------------------------- the fit
    def aligned(self, features: np.ndarray, feature_names=None) -> np.ndarray:
        """Features (samples x ``feature_names``) re-indexed to the fit's genes (NaN: absent)."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if feature_names is None:
            return features
        position = pd.Index(np.asarray(feature_names).astype(str)).get_indexer(self.genes)
        out = np.full((features.shape[0], len(self.genes)), np.nan)
        present = position >= 0
        out[:, present] = features[:, position[present]]
        return out

    def mrna_shares(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(known mRNA shares, samples x types; other cells' mRNA share, samples), shares of the
        whole transcriptome, rows summing to 1 (NaN without enough observed marker genes). ``features``: samples x the fit's genes, linear
        (any scale: re-normalised to CPM over the observed genes), NaN = not measured."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        n_types = self.signature.shape[1]
        known = np.zeros((features.shape[0], n_types))
        denominator = np.zeros(len(self.genes), dtype=bool)
        if self.housekeeping is not None:
            denominator[self.housekeeping] = True
        for i, x in enumerate(features):
            observed = np.isfinite(x)
            scaled_by = observed & denominator if self.housekeeping is not None else observed
            total = x[scaled_by].sum()
            marker = observed[self.rows]
            if total <= 0 or marker.sum() < n_types:
                known[i] = np.nan
                continue
            factor = None
            if self.bound is not None:  # the linear fit's cap, on the bulk's CPM over its observed genes
                x_cpm = x[self.rows][marker] / x[observed].sum() * CPM_TOTAL
                bound = self.bound[marker]
                factor = np.where(x_cpm > bound, bound / np.where(x_cpm > bound, x_cpm, 1.0), 1.0)
            m = self._fit(self.signature[self.rows][marker], x[self.rows][marker] / total * CPM_TOTAL,
                          self.gene_weight[marker], factor)
            # shares of the bulk's mRNA on the scaling genes D (observed, or observed housekeeping
            # genes): type k's is m_k·Σ_{g in D} S_gk / 10⁶; the rest is the other cells', which hold
            # as much of their mRNA on D as the reference's types on average (d̄), so their share of
            # the whole transcriptome is rest / d̄ (in the units of m)
            on_denominator = m * self.signature[scaled_by].sum(axis=0) / CPM_TOTAL
            rest = max(1.0 - on_denominator.sum(), 0.0)
            share = on_denominator.sum() / m.sum() if m.sum() > 0 else np.median(self.signature[scaled_by].sum(axis=0)) / CPM_TOTAL
            whole = m.sum() + rest / share
            known[i] = m / whole
        other = np.where(np.isfinite(known).all(axis=1), np.clip(1.0 - known.sum(axis=1), 0.0, 1.0), np.nan)
        return known, other

    def _fit(self, design: np.ndarray, x: np.ndarray, weight: np.ndarray, factor: np.ndarray | None) -> np.ndarray:
        """Unnormalised m ≥ 0 minimising Σ_g f_g²·c_g·(x_g - (S·m)_g)² / ((S·m)_g + offset), c_g = κ
        where S·m > x, by iteratively reweighted NNLS (``iterations`` rounds; the first weighs by
        ``weight``, 1 / (mean CPM + offset)); ``factor`` f_g scales capped genes' equations."""
        cap = 1.0 if factor is None else factor * factor
        scale = max(float(design.max()), 1e-12)
        current = weight * cap
        m = np.zeros(design.shape[1])
        for _ in range(max(self.iterations, 1)):
            root = np.sqrt(current)
            m, _ = nnls(design * root[:, None] / scale, x * root / scale, maxiter=50 * design.shape[1])
            fitted = design @ m
            current = cap / (fitted + self.weight_offset_cpm) * np.where(fitted > x, self.envelope_weight, 1.0)
        return m

    def estimate(self, features: np.ndarray) -> np.ndarray:
        """Fraction of cells of no reference type per sample (NaN where too few marker genes)."""
        known, other = self.mrna_shares(features)
        return to_other_cells(known, other, self.library_size, self.unknown_library_size)

    def spread(self, features: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Standard deviation of :meth:`estimate` over gene-masked replicates (``masks``:
        replicates x the fit's genes, True = kept), per sample."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        replicates = np.stack([self.estimate(np.where(mask[None, :], features, np.nan)) for mask in masks])
        return replicates.std(axis=0, ddof=1) if len(masks) > 1 else np.zeros(features.shape[0])

    # ---------------------------------------------------------------- storage
    def state(self) -> dict:
        return {"genes": self.genes.tolist(), "cell_types": self.cell_types.tolist(),
                "signature": self.signature.tolist(), "rows": self.rows.tolist(),
                "library_size": self.library_size.tolist(), "unknown_library_size": self.unknown_library_size,
                "envelope_weight": self.envelope_weight, "weight_offset_cpm": self.weight_offset_cpm,
                "iterations": self.iterations, "max_bulk_ratio": self.max_bulk_ratio,
                "housekeeping": None if self.housekeeping is None else self.housekeeping.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "OtherCellsFit":
        return cls(state["genes"], state["cell_types"], np.asarray(state["signature"], dtype=np.float64), state["rows"],
                   state["library_size"], state["unknown_library_size"], state["envelope_weight"],
                   state["weight_offset_cpm"], state["iterations"], state["max_bulk_ratio"], state.get("housekeeping"))


def specific_marker_rows(signature: np.ndarray, n_per_type: int, min_log2_fold_change: float, min_cpm: float,
                         cell_types=None, strict: bool = True) -> np.ndarray:
    """Sorted row indices of each type's ``n_per_type`` most specific genes: CPM ≥ ``min_cpm`` in
    the type and log2(CPM + 1) at least ``min_log2_fold_change`` above the highest other type,
    ranked by that difference (ties by row). ``signature``: genes x types CPM. A type with no such
    gene: ``strict`` raises ``DeconflowError`` (it could not be fitted); otherwise it takes its
    ``n_per_type`` genes of highest difference (a small reference or close types), with a warning."""
    values = np.asarray(signature, dtype=np.float64)
    logged = np.log2(values + 1.0)
    chosen = set()
    for k in range(values.shape[1]):
        others = np.delete(logged, k, axis=1).max(axis=1) if values.shape[1] > 1 else np.zeros(len(values))
        score = logged[:, k] - others
        candidates = np.flatnonzero((score >= min_log2_fold_change) & (values[:, k] >= min_cpm))
        name = cell_types[k] if cell_types is not None else k
        if len(candidates) == 0 and not strict:
            candidates = np.arange(len(values))
            logging.getLogger(__name__).warning(
                "cell type %r has no gene >= %g CPM and >= %g log2 fold change above every other type: its %d genes of "
                "highest fold change are used (best %.2f)", name, min_cpm, min_log2_fold_change, n_per_type, score.max())
        if len(candidates) == 0:
            raise DeconflowError(None, f"cell type {name!r} of the signature has no gene ≥ {min_cpm:g} CPM and "
                                       f"≥ {min_log2_fold_change:g} log2 fold change above every other type",
                                 "lower other_cells.min_log2_fold_change or other_cells.min_marker_cpm")
        order = candidates[np.argsort(-score[candidates], kind="stable")]
        chosen.update(int(i) for i in order[:n_per_type])
    return np.array(sorted(chosen), dtype=np.int64)


#: genes never used as housekeeping genes: mitochondrial and ribosomal-protein transcripts, the
#: ones whose share differs most between a 10x 3' reference and full-length bulk
NOT_HOUSEKEEPING = r"^(?:MT-|RP[SL]\d|RPLP)"


def housekeeping_rows(signature: pd.DataFrame, min_cpm: float, max_ratio: float) -> np.ndarray:
    """Sorted row indices of genes every type expresses at ≥ ``min_cpm`` CPM, at most
    ``max_ratio`` times apart between types, not mitochondrial or ribosomal-protein genes (by
    name). Raises ``DeconflowError`` when there is none."""
    values = signature.to_numpy(dtype=np.float64)
    low, high = values.min(axis=1), values.max(axis=1)
    named = ~pd.Index(signature.index.astype(str)).str.contains(NOT_HOUSEKEEPING, regex=True)
    rows = np.flatnonzero((low >= min_cpm) & (high <= max_ratio * low) & named)
    if len(rows) == 0:
        raise DeconflowError(None, f"no gene is expressed by every cell type at ≥ {min_cpm:g} CPM within {max_ratio:g}-fold",
                             "lower other_cells.housekeeping_min_cpm, raise housekeeping_max_ratio, or set scale_genes: all")
    return rows


def unknown_size(value, library_size: np.ndarray) -> float:
    """The other cells' mRNA per cell: a positive number, or ``median`` of the reference types'."""
    if value == "median":
        return float(np.median(np.asarray(library_size, dtype=np.float64)))
    size = float(value)
    if not size > 0:
        raise ValueError(f"unknown_library_size must be positive or 'median', got {value!r}")
    return size


def to_other_cells(known_mrna: np.ndarray, other_mrna: np.ndarray, library_size: np.ndarray, unknown_library_size: float) -> np.ndarray:
    """mRNA shares → the other cells' share of cells: (a/L_u) / (a/L_u + Σ_k m_k/L_k), per sample."""
    known_cells = (np.asarray(known_mrna, dtype=np.float64) / np.asarray(library_size, dtype=np.float64)[None, :]).sum(axis=1)
    other_cells = np.asarray(other_mrna, dtype=np.float64) / float(unknown_library_size)
    total = known_cells + other_cells
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, other_cells / np.where(total > 0, total, 1.0), np.nan)


def absolute_fractions(proportions: pd.DataFrame, other_cells: np.ndarray) -> pd.DataFrame:
    """Reference types' fractions x (1 - other_cells) and an ``other cells`` column; rows sum to
    1 (a sample without an estimate, NaN, keeps its fractions and gets NaN other cells)."""
    other = np.asarray(other_cells, dtype=np.float64)
    scale = np.where(np.isfinite(other), 1.0 - other, 1.0)
    table = proportions.mul(scale, axis=0)
    table[OTHER_COLUMN] = other
    return table


# --------------------------------------------------------------------------- calibration mixtures
def held_out_mixtures(counts, labels: np.ndarray, cell_types: list[str], held_out: str, n_mixtures: int,
                      max_unknown: float, mixture_settings, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(CPM mixtures x genes, cell fractions mixtures x ``cell_types``) of a pool's cells in which
    ``held_out`` makes up a fraction drawn uniformly from [0, ``max_unknown``] and the other types
    share the rest as ``deconflow.pseudobulk.sample_proportions`` draws it (``mixture_settings``:
    a ``MixtureSettings``). ``counts``: pool cells x genes raw counts (CSR)."""
    import scipy.sparse as sp

    from .normalize import cpm
    from .pseudobulk import cells_per_type, in_memory_chunks, sample_proportions, selection_matrix, sum_selected_counts

    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(str)
    k = list(cell_types).index(held_out)
    others = [j for j in range(len(cell_types)) if j != k]
    unknown = rng.uniform(0.0, float(max_unknown), size=n_mixtures)
    known = sample_proportions(n_mixtures, len(others), rng, mixture_settings)
    fractions = np.zeros((n_mixtures, len(cell_types)))
    fractions[:, others] = known * (1.0 - unknown)[:, None]
    fractions[:, k] = unknown
    per_type = cells_per_type(fractions, mixture_settings.cells_per_mixture)
    pools = [np.flatnonzero(labels == t) for t in cell_types]
    counts = sp.csr_matrix(counts)
    selection = selection_matrix(per_type, pools, len(labels), rng)
    summed = sum_selected_counts(selection, in_memory_chunks(counts), counts.shape[1], mixture_settings.cells_per_mixture)
    return cpm(summed), per_type / mixture_settings.cells_per_mixture


def held_out_signature(signature: pd.DataFrame, held_out: str, linear_fit: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """The signature without ``held_out`` (its ``cell_library_size`` / ``detection`` attrs
    reduced too) and the linear-fit settings without sibling pairs that name it."""
    reduced = signature.drop(columns=[held_out])
    for key in ("cell_library_size", "detection"):
        value = signature.attrs.get(key)
        if value is None:
            continue
        if isinstance(value, pd.DataFrame):
            reduced.attrs[key] = value.drop(columns=[held_out])
        else:
            keep = [str(t) != held_out for t in signature.columns]
            reduced.attrs[key] = value[keep] if isinstance(value, pd.Series) else np.asarray(value)[keep]
    linear_fit = dict(linear_fit or {})
    linear_fit["siblings"] = [list(p) for p in linear_fit.get("siblings") or [] if held_out not in map(str, p)]
    return reduced, linear_fit


def calibrate(signature: pd.DataFrame, library_size, pool_counts, pool_labels, *, settings: dict | None = None,
              linear_fit: dict | None = None, interval_settings: dict | None = None, mixture_settings=None,
              seed: int = 0) -> dict:
    """The other-cells calibration of a signature: its fit (every type) and the sorted conformal
    scores of held-out-type mixtures of the pool (module docstring). JSON-serialisable.

    ``pool_counts``: validation-pool cells x the signature's genes, raw counts (CSR);
    ``interval_settings``: ``deconflow.trust.INTERVAL_DEFAULTS`` keys; ``mixture_settings``:
    ``MixtureSettings`` of the mixtures (its ``n_mixtures`` is ignored).
    """
    from .pseudobulk import MixtureSettings

    settings = {**OTHER_CELLS_DEFAULTS, **(settings or {})}
    interval_settings = {**INTERVAL_DEFAULTS, **(interval_settings or {})}
    mixture_settings = mixture_settings or MixtureSettings()
    library_size = np.asarray(library_size, dtype=np.float64)
    signature = signature.copy()
    signature.attrs["cell_library_size"] = library_size
    types = [str(t) for t in signature.columns]
    masks = gene_masks(len(signature), int(interval_settings["replicates"]), float(interval_settings["gene_drop_fraction"]), seed)
    floor = float(interval_settings["spread_floor"])
    scores, validation = [], {}
    for index, held_out in enumerate(types):
        reduced, reduced_fit = held_out_signature(signature, held_out, linear_fit)
        fit = OtherCellsFit.from_signature(reduced, np.delete(library_size, index), settings, reduced_fit)
        features, fractions = held_out_mixtures(pool_counts, pool_labels, types, held_out, int(settings["mixtures_per_type"]),
                                                float(settings["max_unknown"]), mixture_settings, seed + 1 + index)
        truth = fractions[:, index]
        estimate = fit.estimate(features)
        spread = fit.spread(features, masks)
        scores.append(np.abs(truth - estimate) / (spread + floor))
        validation[held_out] = {"mae": float(np.mean(np.abs(truth - estimate))), "mean_truth": float(truth.mean()),
                                "mean_estimate": float(estimate.mean())}
        log.info("other cells, %s held out: validation MAE %.3f (mean truth %.3f, estimate %.3f)", held_out,
                 validation[held_out]["mae"], truth.mean(), estimate.mean())
    full = OtherCellsFit.from_signature(signature, library_size, settings, linear_fit)
    return {
        "format": OTHER_CELLS_FORMAT,
        "settings": {key: settings[key] for key in CALIBRATION_SETTINGS},
        "seed": int(seed),
        "replicates": int(interval_settings["replicates"]),
        "gene_drop_fraction": float(interval_settings["gene_drop_fraction"]),
        "spread_floor": floor,
        "scores": np.sort(np.concatenate(scores)).tolist(),
        "validation": validation,
        "fit": full.state(),
    }


def write_calibration(calibration: dict, path) -> None:
    """Compact JSON (the signature makes it large), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(calibration, sort_keys=True, separators=(",", ":")) + "\n")


@with_fixed_threads
def calibrate_file(reference_path, cells_path, signature_path, out_path, *, reader: dict | None = None,
                   settings: dict | None = None, linear_fit: dict | None = None, interval_settings: dict | None = None,
                   mixture_settings: dict | None = None, seed: int = 0) -> dict:
    """Reference + split table + signature (with ``cell_library_size.tsv``) -> the calibration
    file (rule ``calibrate_other_cells``). ``reader``: ``open_reference`` keyword arguments."""
    from .io import open_reference, read_signature
    from .pseudobulk import MixtureSettings
    from .split import read_split

    signature = read_signature(signature_path)
    sizes = signature.attrs.get("cell_library_size")
    if sizes is None:
        raise DeconflowError(signature_path, "no cell_library_size.tsv next to the signature (mRNA per cell of each type)",
                             "rerun `snakemake --forcerun build_signature`")
    reader = reader or {}
    reference = open_reference(reference_path, reader.get("label_key", "cell_type"), reader.get("counts_layer"),
                               reader.get("donor_key"), labels=reader.get("labels"), gene_column=reader.get("gene_column"))
    splits = read_split(cells_path, reference.cell_ids)
    pool = np.flatnonzero(splits == "val")
    genes = pd.Index(np.asarray(reference.genes).astype(str)).get_indexer(signature.index)
    if (genes < 0).any():
        raise DeconflowError(signature_path, f"{int((genes < 0).sum())} signature genes are not in the reference",
                             "rerun `snakemake --forcerun build_signature`")
    counts = reference.counts(pool)[:, genes]
    labels = np.asarray(reference.labels)[pool]
    mixture = MixtureSettings(**{k: v for k, v in (mixture_settings or {}).items() if k != "n_mixtures"})
    calibration = calibrate(signature, np.asarray(sizes, dtype=np.float64), counts, labels, settings=settings,
                            linear_fit=linear_fit, interval_settings=interval_settings, mixture_settings=mixture, seed=seed)
    write_calibration(calibration, out_path)
    return calibration


def default_path(model_path) -> Path:
    """``results/{dataset}/models/other_cells.json`` for ``results/{dataset}/models/{model}/checkpoint_best.pt``."""
    return Path(model_path).parent.parent / "other_cells.json"


def read_other_cells(path, cell_types=None) -> dict:
    """A calibration file, checked (format; the model's cell types when given)."""
    path = Path(path)
    fix = "run `snakemake results/<dataset>/models/other_cells.json`, or pass --other-cells"
    calibration = read_json(path, "other-cells calibration file", fix)
    if calibration.get("format") != OTHER_CELLS_FORMAT or "fit" not in calibration:
        raise DeconflowError(path, f"not an other-cells calibration of format {OTHER_CELLS_FORMAT}", fix)
    if cell_types is not None and calibration["fit"]["cell_types"] != [str(t) for t in cell_types]:
        raise DeconflowError(path, f"other-cells calibration was made for cell types {calibration['fit']['cell_types']}, "
                                   f"not the model's {[str(t) for t in cell_types]}", fix)
    return calibration


def other_cells_table(calibration: dict, features: np.ndarray, feature_names, level: float = 0.9) -> pd.DataFrame:
    """``other_cells``, ``other_cells_lower``, ``other_cells_upper`` and the bool flag per sample
    (rows in the order of ``features``: samples x ``feature_names``, linear)."""
    fit = OtherCellsFit.from_state(calibration["fit"])
    aligned = fit.aligned(features, feature_names)
    estimate = fit.estimate(aligned)
    masks = gene_masks(len(fit.genes), calibration["replicates"], calibration["gene_drop_fraction"], calibration["seed"])
    spread = fit.spread(aligned, masks)
    half = conformal_quantile(calibration["scores"], float(level)) * (spread + calibration["spread_floor"])
    lower, upper = np.clip(estimate - half, 0.0, 1.0), np.clip(estimate + half, 0.0, 1.0)
    flag = np.isfinite(lower) & (lower > float(calibration["settings"]["flag_min_fraction"]))
    return pd.DataFrame(dict(zip(OTHER_CELLS_COLUMNS, (estimate, lower, upper))) | {OTHER_CELLS_FLAG: flag})
