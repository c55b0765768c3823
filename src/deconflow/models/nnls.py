"""NNLS baseline: p = NNLS(S, bulk) normalised to sum 1, and the linear fit shared with HP-VADE.

Works for CPM (RNA, S = cell-type mean CPM) and for betas (methylation atlas, MethAtlas-style):
both are linear mixtures of their columns.

The linear fit on CPM (``LINEAR_FIT_DEFAULTS``, config section ``linear_fit``) has three parts,
each measured on validation mixtures and on the real DAISM cohort (docs/models.md):

- **genes**: the ``marker_genes_per_type`` most type-specific genes per type among those with
  at least ``min_marker_cpm`` in the type (None: all genes). Both keys may be lists: the fit is
  then a **marker-set ensemble**, one weighted NNLS per (markers, threshold) pair with the mRNA
  shares averaged (bagging over marker choices, Breiman 1996, "Bagging predictors", Machine
  Learning 24:123). Which single marker set is best on real bulk of another protocol is decided
  by noise in a signature of ~90 cells per type: single settings next to each other gave real
  CCC 0.64-0.82 on the two PBMC cohorts (README, docs/real-bulk.md); the average of the 16
  fits is as good as the best of them on validation mixtures and steadier on real bulk;
- **gene weights**: each gene's squared residual is weighted by 1 / (mean_k S_gk + offset)²,
  i.e. residuals relative to the gene's expression. Unweighted least squares in CPM is dominated
  by a few hundred very highly expressed genes (ribosomal, MHC, S100), exactly the ones most
  changed between a 10x 3' UMI reference and full-length bulk; the offset (CPM) keeps rare,
  noisy genes from taking over instead (DWLS and Rectangle weight genes in the same spirit);
- **bulk genes beyond any mixture** (``max_bulk_ratio``): a mixture's CPM of gene g cannot exceed
  its highest type's, max_k S_gk. A bulk gene above ``max_bulk_ratio`` times that level (in the
  bulk's CPM over the model's genes) is a protocol effect no proportions can explain, and the
  weighted fit would spend itself on it: in the embedded finotello bulk one housekeeping gene
  (EEF1G, 11,585 CPM in bulk vs at most 122 in the 10x reference, a weak Treg "marker") held
  87-96 % of the weighted bulk norm of 14 of the 16 designs and put ~50 % of PBMC on Tregs. Such
  a gene's equation is scaled by max_bulk_ratio·max_k S_gk / x_g, so it weighs as much as a gene
  at the bound and no more (the leverage cap of robust regression; FARDEEP and Rectangle drop
  outlier genes instead, which here also removed genes the fits need). Pseudobulk never reaches
  the bound, so its fits are unchanged; on the two PBMC cohorts the value was chosen together
  (docs/real-bulk.md has the whole curve and why the choice is fragile);
- **sibling types** (``sibling_types`` of a dataset, e.g. Tregs and conventional CD4 T cells):
  a pair of fine types whose split the whole-signature fit gets from genes that do not carry over
  to bulk of another protocol. The fit's mass of the pair is kept and re-split on the pair's own
  marker genes only (``sibling_split_design``, ``split_siblings``): genes at least as high in one
  of the two as in any other type, ``sibling_min_log2_fold_change`` apart between the two, and
  detected (≥ 1 count) in at least ``sibling_min_detection`` of the higher type's train cells,
  which drops the sparse genes a few cells carry (Seurat's min.pct idea, applied to the split
  only). The split t solves a least-squares fit of log(x_g + 1) to log(M·((1-t)·a_g + t·b_g) +
  R_g + 1) with one free offset (dtangle's log-space model, Hunt et al. 2019, Bioinformatics
  35:2093, with the rest of the fit R_g added); it is exact on noise-free mixtures. On the
  embedded data it raised validation Treg r from 0.86 to 0.94 and moved the Treg share of CD4 T
  cells on real PBMC from 0.30-0.61 to 0.02-0.17 (docs/real-bulk.md);
- **cell fractions**: NNLS of a mean-CPM signature estimates each type's share of mRNA
  m_k ∝ p_k·L_k; dividing by the per-type mean library size L_k of the train pool and
  renormalising gives cell fractions p (MuSiC, Rectangle). Pseudobulk truth and flow cytometry
  are cell fractions.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from ..errors import DeconflowError
from ..signature import select_marker_genes
from .base import FittedModel, restrict_to_evidence

log = logging.getLogger(__name__)

#: Linear-fit settings (config ``linear_fit``): an ensemble of 4 x 4 marker sets (100-300
#: markers per type, at least 1-20 CPM in the type), gene weights with offset 10 CPM, cell
#: fractions, bulk genes above 30 x their highest type's CPM capped. Chosen on the two real PBMC
#: cohorts together (DAISM calibration, Monaco 2019) and the validation mixtures
#: (``make bench-linear-fit``; docs/real-bulk.md).
LINEAR_FIT_DEFAULTS = {"marker_genes_per_type": [100, 150, 200, 300], "min_marker_cpm": [1.0, 5.0, 10.0, 20.0],
                       "weight_offset_cpm": 10.0, "cell_fractions": True, "max_bulk_ratio": 30.0,
                       "siblings": [], "sibling_min_detection": 0.05, "sibling_min_log2_fold_change": 1.0}

#: The sibling split's search: a grid over t in [0, 1], then golden-section steps in the two grid
#: cells around the best point (0.04 · 0.618^50 ≈ 1e-12).
SIBLING_GRID = 51
SIBLING_REFINE_STEPS = 50
#: samples per vectorised block of the sibling split (block x grid x genes float64 temporaries)
SIBLING_BLOCK = 256


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def linear_fit_design(signature: pd.DataFrame, settings: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(row indices of the genes any design uses, weights: designs x those rows).

    One design per (``marker_genes_per_type``, ``min_marker_cpm``) pair (each key a value or a
    list); a design's weight is 0 on genes it does not use, else 1 / (mean CPM + offset)²,
    normalised to a maximum of 1 (a common factor does not change the solution). ``None``
    markers: every gene, one design.
    """
    settings = {**LINEAR_FIT_DEFAULTS, **(settings or {})}
    values = signature.to_numpy(dtype=np.float64)
    offset = settings["weight_offset_cpm"]
    gene_weight = np.ones(len(values)) if offset is None else 1.0 / (values.mean(axis=1) + float(offset)) ** 2
    index = pd.Index(signature.index)
    chosen = []
    for n_markers in _as_list(settings["marker_genes_per_type"]):
        for min_cpm in _as_list(settings.get("min_marker_cpm", 1.0)):
            if n_markers:
                chosen.append(index.get_indexer(select_marker_genes(signature, int(n_markers), float(min_cpm)).index))
            else:
                chosen.append(np.arange(len(values)))
    rows = np.unique(np.concatenate(chosen)).astype(np.int64)
    weights = np.zeros((len(chosen), len(rows)))
    for d, design_rows in enumerate(chosen):
        position = np.searchsorted(rows, design_rows)
        weights[d, position] = gene_weight[design_rows] / gene_weight[design_rows].max()
    return rows, weights


def sibling_split_design(signature: pd.DataFrame, detection: pd.DataFrame | None, settings: dict) -> list[dict]:
    """The genes each sibling pair is re-split on: ``[{"types": [i, j], "rows": gene indices}]``.

    ``settings``: the ``linear_fit`` keys ``siblings`` (pairs of cell-type names),
    ``sibling_min_detection`` and ``sibling_min_log2_fold_change`` (module docstring).
    ``detection``: genes x types share of train cells with ≥ 1 count (``detection.tsv`` of
    build_signature). Raises ``DeconflowError`` for a name that is not a cell type, a group that is
    not two distinct types, a type in two pairs, or pairs without a detection table; a pair with
    fewer than 2 such genes is logged and left to the whole fit.
    """
    pairs = [list(map(str, pair)) for pair in (settings.get("siblings") or [])]
    if not pairs:
        return []
    types = [str(t) for t in signature.columns]
    fix = f"list pairs of the reference's cell types under `sibling_types` (types: {types})"
    seen: set[str] = set()
    for pair in pairs:
        if len(pair) != 2 or pair[0] == pair[1]:
            raise DeconflowError(None, f"sibling_types entry {pair} is not a pair of two different cell types", fix)
        unknown = [t for t in pair if t not in types]
        if unknown:
            raise DeconflowError(None, f"sibling_types names {unknown}, not cell types of the reference", fix)
        if seen & set(pair):
            raise DeconflowError(None, f"sibling_types puts {sorted(seen & set(pair))} in two pairs", "give each type one pair")
        seen |= set(pair)
    if detection is None:
        raise DeconflowError(None, "sibling_types needs the train cells' detection rates (detection.tsv next to the signature)",
                             "rerun `snakemake --forcerun build_signature`")
    values = signature.to_numpy(dtype=np.float64)
    detected = detection.reindex(index=signature.index, columns=signature.columns).fillna(0.0).to_numpy(dtype=np.float64)
    min_detection = float(settings["sibling_min_detection"])
    min_lfc = float(settings["sibling_min_log2_fold_change"])
    out = []
    for pair in pairs:
        idx = np.array([types.index(t) for t in pair])
        rest = np.setdiff1d(np.arange(len(types)), idx)
        own = values[:, idx]
        higher = own.argmax(axis=1)
        log_own = np.log2(own + 1.0)
        keep = ((own.max(axis=1) >= (values[:, rest].max(axis=1) if len(rest) else 0.0))
                & (np.abs(log_own[:, 0] - log_own[:, 1]) >= min_lfc)
                & (detected[np.arange(len(values)), idx[higher]] >= min_detection))
        rows = np.flatnonzero(keep)
        log.info("sibling split %s: %d genes (detected in >= %.0f %% of the higher type's cells, log2 fold change >= %g)",
                 " / ".join(pair), len(rows), 100 * min_detection, min_lfc)
        if len(rows) < 2:
            log.warning("sibling pair %s has %d genes to split on: the whole fit's split is kept", pair, len(rows))
            continue
        out.append({"types": idx.astype(np.int64), "rows": rows.astype(np.int64)})
    return out


def split_siblings(features: np.ndarray, mrna: np.ndarray, signature: np.ndarray, groups: list[dict]) -> np.ndarray:
    """Re-split each sibling pair's mRNA share on its own genes (module docstring); samples x types.

    ``features``: samples x features in CPM (NaN = not measured); ``mrna``: the fit's samples x
    types mRNA shares (rows sum to 1); ``signature``: features x types mean CPM. Per sample and
    pair, M = the pair's share, R_g = the other types' part of the fitted profile; t ∈ [0, 1]
    minimises Σ_g (d_g - mean d)², d_g = log(x_g + 1) - log(M·((1-t)·a_g + t·b_g) + R_g + 1), over the
    pair's observed genes (a grid, then golden-section steps; vectorised over samples). Samples
    with fewer than 2 observed genes or M = 0 keep the fit's split. A noise-free mixture x = S·m
    gives d ≡ 0 at the true t, so the split is exact.
    """
    out = np.array(mrna, dtype=np.float64, copy=True)
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    grid = np.linspace(0.0, 1.0, SIBLING_GRID)
    for group in groups:
        i, j = (int(k) for k in group["types"])
        rows = np.asarray(group["rows"])
        a, b = signature[rows, i], signature[rows, j]
        rest = np.ones(signature.shape[1], dtype=bool)
        rest[[i, j]] = False
        for start in range(0, len(features), SIBLING_BLOCK):
            block = slice(start, start + SIBLING_BLOCK)
            x = features[block][:, rows]
            observed = np.isfinite(x)
            n_observed = observed.sum(axis=1)
            mass = out[block, i] + out[block, j]
            todo = (n_observed >= 2) & (mass > 0)
            if not todo.any():
                continue
            weight = observed[todo].astype(np.float64)  # 1 for an observed gene, else 0
            n_obs = n_observed[todo][:, None]
            log_x = np.log(np.where(observed, x, 0.0)[todo] + 1.0) * weight
            m = mass[todo]
            # the pair's profile at t is base + t·delta (CPM + 1), with the other types' part of the fit
            base = m[:, None] * a[None, :] + out[block][todo][:, rest] @ signature[rows][:, rest].T + 1.0
            delta = m[:, None] * (b - a)[None, :]

            def loss(t):  # t: samples x points -> samples x points: Σ_obs d² - n·mean(d)²
                d = log_x[:, None, :] - np.log(base[:, None, :] + t[..., None] * delta[:, None, :]) * weight[:, None, :]
                total = d.sum(axis=2)
                return (d * d).sum(axis=2) - total * total / n_obs

            values = loss(np.broadcast_to(grid, (len(m), len(grid))))
            best = values.argmin(axis=1)
            low = grid[np.maximum(best - 1, 0)]
            high = grid[np.minimum(best + 1, len(grid) - 1)]
            ratio = (np.sqrt(5.0) - 1.0) / 2.0
            for _ in range(SIBLING_REFINE_STEPS):
                c = high - ratio * (high - low)
                e = low + ratio * (high - low)
                pair = loss(np.stack([c, e], axis=1))
                left = pair[:, 0] <= pair[:, 1]
                high = np.where(left, e, high)
                low = np.where(left, low, c)
            t = (low + high) / 2.0
            # never worse than the best grid point
            refined, on_grid = loss(t[:, None])[:, 0], values[np.arange(len(m)), best]
            t = np.where(refined <= on_grid, t, grid[best])
            rows_out = np.flatnonzero(todo) + start
            out[rows_out, i] = m * (1.0 - t)
            out[rows_out, j] = m * t
    return out


def split_siblings_in_cells(features: np.ndarray, fractions: np.ndarray, signature: np.ndarray,
                            library_size: np.ndarray | None, groups: list[dict]) -> np.ndarray:
    """``split_siblings`` for an estimate in cell fractions (HP-VADE's stacked output): to mRNA
    shares (m ∝ p·L), re-split, back to cells; samples x types."""
    fractions = np.atleast_2d(np.asarray(fractions, dtype=np.float64))
    if not groups or len(fractions) == 0:
        return fractions
    mrna = fractions if library_size is None else fractions * np.asarray(library_size, dtype=np.float64)[None, :]
    totals = mrna.sum(axis=1, keepdims=True)
    mrna = np.where(totals > 0, mrna / np.where(totals > 0, totals, 1.0), mrna)
    return cell_fractions(split_siblings(features, mrna, signature, groups), library_size)


def cell_fractions(mrna_fractions: np.ndarray, library_size: np.ndarray | None) -> np.ndarray:
    """mRNA shares → cell shares: p_k ∝ m_k / L_k, rows renormalised (unchanged without sizes).

    A row that is all zero stays as it is (nothing to convert).
    """
    m = np.atleast_2d(np.asarray(mrna_fractions, dtype=np.float64))
    if library_size is None:
        return m
    q = m / np.asarray(library_size, dtype=np.float64)[None, :]
    totals = q.sum(axis=1, keepdims=True)
    return np.where(totals > 0, q / np.where(totals > 0, totals, 1.0), m)


def nnls_proportions(signature: np.ndarray, features: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """Solve min ||S p - x||, p ≥ 0 per sample, then normalise rows to sum 1.

    NaN features (methylation regions without reads, or missing from a bulk file) are dropped
    for that sample only: the fit uses the rows that were observed. ``columns`` (samples x types,
    bool) restricts each sample's fit to those types (the others are exactly 0); the sparse
    model's presence-gated refit uses it. Samples whose solution is all zero (or that have no
    observed feature) get uniform proportions over their allowed types (nothing better is known).
    """
    signature = np.asarray(signature, dtype=np.float64)
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    n_types = signature.shape[1]
    allowed = np.ones((features.shape[0], n_types), dtype=bool) if columns is None else np.array(columns, dtype=bool)
    out = np.zeros((features.shape[0], n_types))
    for i, x in enumerate(features):
        rows = ~np.isnan(x)
        cols = allowed[i]
        if not cols.any():
            cols = np.ones(n_types, dtype=bool)
            allowed[i] = cols
        if not rows.any():
            continue
        S = signature if cols.all() else signature[:, cols]
        if rows.all():
            coef, _ = nnls(S, x, maxiter=50 * n_types)
        else:
            coef, _ = nnls(S[rows], x[rows], maxiter=50 * n_types)
        out[i, cols] = coef
    totals = out.sum(axis=1, keepdims=True)
    zero = totals[:, 0] <= 0
    out[zero] = allowed[zero] / allowed[zero].sum(axis=1, keepdims=True)
    totals[zero] = 1.0
    return out / totals


def reduced_nnls(signature: np.ndarray, features: np.ndarray) -> np.ndarray:
    """:func:`nnls_proportions` (every feature observed) for many samples through the normal
    equations: with G = SᵀS = RᵀR (Cholesky), ||S·p − x||² = ||R·p − R⁻ᵀSᵀx||² + const, so each
    sample is an NNLS of size types x types instead of features x types. The same solution up to
    rounding (G squares S's condition number); falls back to :func:`nnls_proportions` when G is
    singular (a type without any observed feature)."""
    from scipy.linalg import solve_triangular

    signature = np.asarray(signature, dtype=np.float64)
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    try:
        upper = np.linalg.cholesky(signature.T @ signature).T
    except np.linalg.LinAlgError:
        return nnls_proportions(signature, features)
    if np.diag(upper).min() <= 1e-10 * np.diag(upper).max():
        return nnls_proportions(signature, features)
    targets = solve_triangular(upper, (features @ signature).T, trans="T").T
    n_types = signature.shape[1]
    out = np.array([nnls(upper, y, maxiter=50 * n_types)[0] for y in targets]).reshape(len(features), n_types)
    totals = out.sum(axis=1, keepdims=True)
    zero = totals[:, 0] <= 0
    out[zero] = 1.0 / n_types
    totals[zero] = 1.0
    return out / totals


def batched_nnls(signature: "torch.Tensor", features: "torch.Tensor", iterations: int = 400, em_rounds: int = 2) -> tuple:
    """Approximate NNLS for a batch in torch (FISTA on the normal equations), rows normalised to sum 1.

    The learned models use it as a fixed layer on the training device (sparse: network input;
    hpvade: signature prior); it solves the same problem as :func:`nnls_proportions`.

    NaN features are imputed by S·p of the previous round (EM for least squares with missing
    rows; converges to dropping them). Returns (proportions, RMS residual over observed features).
    """
    import torch

    missing = torch.isnan(features)
    observed = ~missing
    x = torch.where(missing, torch.zeros_like(features), features)
    gram = signature.T @ signature
    lipschitz = torch.linalg.eigvalsh(gram).max().clamp_min(1e-12)
    n_types = signature.shape[1]
    p = torch.full((features.shape[0], n_types), 1.0 / n_types, dtype=features.dtype, device=features.device)
    if missing.any():
        x = torch.where(missing, (p @ signature.T), x)
    rounds = em_rounds if missing.any() else 1
    for _ in range(rounds):
        b = x @ signature
        y, p_prev, t = p.clone(), p.clone(), 1.0
        for _ in range(iterations):
            p_new = (y - (y @ gram - b) / lipschitz).clamp_min(0.0)
            t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
            y = p_new + ((t - 1.0) / t_new) * (p_new - p_prev)
            p_prev, t = p_new, t_new
        p = p_prev
        if missing.any():
            x = torch.where(missing, p @ signature.T, x)
    residual = torch.where(observed, features - p @ signature.T, torch.zeros_like(features))
    rms = (residual.pow(2).sum(dim=1) / observed.sum(dim=1).clamp_min(1)).sqrt()
    totals = p.sum(dim=1, keepdim=True)
    p = torch.where(totals > 0, p / totals.clamp_min(1e-12), torch.full_like(p, 1.0 / n_types))
    return p, rms


def _solve_by_pattern(design: np.ndarray, scaled: np.ndarray, solve) -> np.ndarray:
    """``solve(design, scaled)`` (samples x types) with samples grouped by their pattern of
    observed (finite) rows: one design matrix per pattern."""
    observed = np.isfinite(scaled)
    if observed.all():
        return solve(design, scaled)
    out = np.zeros((scaled.shape[0], design.shape[1]))
    _, first, group = np.unique(np.packbits(observed, axis=1), axis=0, return_index=True, return_inverse=True)
    for g, row in enumerate(first):
        members = np.flatnonzero(group.ravel() == g)
        rows = observed[row]
        out[members] = solve(design[rows], scaled[np.ix_(members, rows)])
    return out


class NNLSModel(FittedModel):
    """NNLS of the signature, optionally on marker genes with gene weights, in cell fractions.

    Without ``rows``/``weights``/``library_size`` it is plain NNLS on every feature (the
    methylation atlas, and checkpoints written before the linear-fit settings existed).
    """

    name = "nnls"

    def __init__(self, signature: pd.DataFrame, normalization: str = "cpm", scale: float | None = None,
                 rows: np.ndarray | None = None, weights: np.ndarray | None = None, library_size: np.ndarray | None = None,
                 max_bulk_ratio: float | None = None, siblings: list[dict] | None = None):
        super().__init__(signature.index, signature.columns, normalization)
        self.signature = signature.to_numpy(dtype=np.float64)
        # Scaling S and x by the same constant leaves NNLS's solution unchanged but keeps the
        # solver's tolerances meaningful for CPM-sized numbers.
        self.scale = float(scale if scale is not None else max(self.signature.max(), 1e-12))
        self.rows = np.arange(self.signature.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        # designs x rows (0: the gene is not in that design); one row = a single fit
        self.weights = np.ones((1, len(self.rows))) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
        self.library_size = None if library_size is None else np.asarray(library_size, dtype=np.float64)
        # None: no cap (methylation, and checkpoints written before the cap existed)
        self.max_bulk_ratio = None if max_bulk_ratio is None else float(max_bulk_ratio)
        # sibling pairs re-split on their own genes (``sibling_split_design``); none in older checkpoints
        self.siblings = [{"types": np.asarray(g["types"], dtype=np.int64), "rows": np.asarray(g["rows"], dtype=np.int64)}
                         for g in (siblings or [])]

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.predict_partial(features)

    def predict_partial(self, features: np.ndarray) -> np.ndarray:
        """NNLS on the measured features only: dropping rows of S (without re-normalising its
        columns) keeps x ∝ S_shared · p, so the normalised solution is still p. With several
        designs (marker-set ensemble) their mRNA shares are averaged, then converted to cells."""
        return cell_fractions(self.mrna_fractions(features), self.library_size)

    def predict_quiet(self, features: np.ndarray) -> np.ndarray:
        """``predict_partial`` through the reduced solver (``reduced_nnls``: the same solution up to
        rounding, ~20x faster for many samples); used for the gene-masked replicates of intervals."""
        return cell_fractions(self.mrna_fractions(features, reduced=True), self.library_size)

    def _designs(self, features: np.ndarray):
        """Per design: (design matrix, weighted features), both scaled by 1/scale, on its rows."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))[:, self.rows]
        for design_weights in self.weights:
            used = design_weights > 0
            root_w = np.sqrt(design_weights[used])
            yield (self.signature[self.rows[used]] * root_w[:, None] / self.scale,
                   features[:, used] * root_w[None, :] / self.scale)

    def bulk_factors(self, features: np.ndarray) -> np.ndarray | None:
        """Samples x ``rows`` factors scaling each gene's equation (1: untouched), or None when no
        gene of any sample is beyond the cap (or there is no cap).

        x_g in CPM over the sample's observed model features; a gene with
        x_g > ``max_bulk_ratio`` · max_k S_gk gets factor ``max_bulk_ratio`` · max_k S_gk / x_g
        (module docstring, "bulk genes beyond any mixture")."""
        if self.max_bulk_ratio is None:
            return None
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        total = np.nansum(features, axis=1, keepdims=True)
        bound = self.max_bulk_ratio * self.signature[self.rows].max(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = features[:, self.rows] / np.where(total > 0, total, np.nan) * 1e6 / bound
        beyond = np.isfinite(ratio) & (ratio > 1)
        if not beyond.any():
            return None
        factors = np.ones_like(ratio)
        factors[beyond] = 1.0 / ratio[beyond]
        return factors

    def mrna_fractions(self, features: np.ndarray, reduced: bool = False) -> np.ndarray:
        """Samples x types mRNA shares: the mean over designs of each design's weighted NNLS.

        Samples sharing a pattern of observed genes (one bulk file, one gene-masked copy) are
        solved with one design matrix; ``reduced``: through ``reduced_nnls``. Samples with genes
        beyond ``max_bulk_ratio`` (:meth:`bulk_factors`) are solved one at a time with those genes'
        equations scaled down. Sibling pairs are then re-split on their own genes (``split_siblings``)."""
        solve = reduced_nnls if reduced else nnls_proportions
        n_samples = np.atleast_2d(features).shape[0]
        factors = self.bulk_factors(features)
        mrna = np.zeros((n_samples, self.signature.shape[1]))
        for d, (design, scaled) in enumerate(self._designs(features)):
            if factors is None:
                mrna += _solve_by_pattern(design, scaled, solve)
                continue
            f = factors[:, self.weights[d] > 0]
            capped = (f < 1).any(axis=1)
            if not capped.all():
                mrna[~capped] += _solve_by_pattern(design, scaled[~capped], solve)
            for i in np.flatnonzero(capped):
                mrna[i] += _solve_by_pattern(design * f[i][:, None], scaled[i : i + 1] * f[i], solve)[0]
        mrna = mrna / len(self.weights)
        if self.siblings:
            mrna = split_siblings(features, mrna, self.signature, self.siblings)
        return mrna

    def used_features(self) -> np.ndarray:
        return self.rows

    def atlas_betas(self) -> np.ndarray | None:
        return self.signature if self.normalization == "beta" else None

    def predict_reads(self, features: np.ndarray, coverage: np.ndarray, evidence: np.ndarray, supported: np.ndarray) -> np.ndarray:
        """Plain NNLS of the fractions on the types with evidence only (the reads are not used
        as weights: that is ``nnls_reads``); the others NaN."""
        p = nnls_proportions(self.signature / self.scale, np.atleast_2d(features) / self.scale, columns=evidence)
        return restrict_to_evidence(p, evidence)

    def relative_residual(self, features: np.ndarray) -> np.ndarray:
        """||W½(x - S·m)|| / ||W½·x|| of the weighted NNLS over each sample's observed rows
        (m unnormalised, so the bulk's scale does not matter), averaged over the designs; NaN
        without observed rows."""
        total = np.zeros(np.atleast_2d(features).shape[0])
        for design, scaled in self._designs(features):
            for i, x in enumerate(scaled):
                observed = np.isfinite(x)
                norm = np.linalg.norm(x[observed])
                if norm > 0:
                    _, residual_norm = nnls(design[observed], x[observed], maxiter=50 * design.shape[1])
                    total[i] += residual_norm / norm
                else:
                    total[i] = np.nan
        return total / len(self.weights)

    def state(self) -> dict:
        return {"signature": self.signature, "scale": self.scale, "rows": self.rows, "weights": self.weights,
                "library_size": self.library_size, "max_bulk_ratio": self.max_bulk_ratio, "siblings": self.siblings}

    @classmethod
    def from_state(cls, state: dict, feature_names, cell_types, normalization: str) -> "NNLSModel":
        df = pd.DataFrame(state["signature"], index=feature_names, columns=cell_types)
        return cls(df, normalization=normalization, scale=state["scale"], rows=state.get("rows"),
                   weights=state.get("weights"), library_size=state.get("library_size"),
                   max_bulk_ratio=state.get("max_bulk_ratio"), siblings=state.get("siblings"))


def fit(train, val, signature: pd.DataFrame, settings: dict, **_) -> NNLSModel:
    """NNLS has nothing to learn: the fitted model is the signature with its linear-fit design.

    On CPM the ``linear_fit`` settings (markers, gene weights, cell fractions) apply; betas of a
    methylation atlas keep plain NNLS on every region (their fractions are of DNA already).
    """
    if train.normalization != "cpm":
        return NNLSModel(signature, normalization=train.normalization)
    linear_fit = {**LINEAR_FIT_DEFAULTS, **(settings.get("linear_fit") or {})}
    rows, weights = linear_fit_design(signature, linear_fit)
    library_size = signature.attrs.get("cell_library_size") if linear_fit["cell_fractions"] else None
    if linear_fit["cell_fractions"] and library_size is None:
        log.warning("no cell_library_size.tsv next to the signature: NNLS gives mRNA fractions, not cell fractions")
    return NNLSModel(signature, normalization="cpm", rows=rows, weights=weights,
                     library_size=None if library_size is None else np.asarray(library_size, dtype=np.float64),
                     max_bulk_ratio=linear_fit["max_bulk_ratio"],
                     siblings=sibling_split_design(signature, signature.attrs.get("detection"), linear_fit))
