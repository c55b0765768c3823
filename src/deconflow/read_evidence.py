"""What methylation reads can say: evidence per atlas type, a read-count fit, detection tests.

Real bisulfite data rarely covers a whole atlas: a targeted panel covers a few hundred marker
regions (the U-marker panels of UXM and MetDecode), low-pass WGBS a random share. What a sample
can speak about is therefore decided per cell type, from the atlas and the sample's reads, not
by a fixed number of covered regions.

Markers and evidence (``marker_regions``, ``type_evidence``)
    Region r is a marker of type k when k's beta is at least ``marker_min_delta`` (default 0.5)
    below (U-marker) or above (M-marker) the region's median over the atlas types, in k alone or
    in at most ``marker_max_types`` (default 3) types together (pancreas alpha, beta and delta
    share theirs). On the uxm_roadmap panel this finds exactly the 35 types whose U-markers the
    panel carries (Loyfer et al. 2023's Markers.U25), on the celfie_wgbs windows its 8 types. A sample has
    evidence for k when at least ``min_marker_regions`` of k's markers carry ≥
    ``min_region_reads`` calls. Types without evidence are not fitted and are reported as NaN
    ("no evidence"), never 0: the reads cannot tell whether they are there.

Read-count fit (``read_fit``)
    Per sample, the observed fractions x_r = m_r / n_r of the covered regions are fitted by
    non-negative least squares x ≈ S·c over the types with evidence, each region weighted by the
    inverse of a beta-binomial variance v_r = μ_r(1 - μ_r)·(1/n_r + ρ) (μ = S·c, floored at
    ``variance_floor``): 1/n_r is the binomial sampling of the calls, ρ the sample's
    over-dispersion (donor-to-atlas variation, calls of one read being correlated), estimated by
    the method of moments so that the Pearson χ² equals its degrees of freedom (ρ = 0 when the
    binomial alone explains the scatter). Weights and ρ are iterated ``reweight_rounds`` times.
    It is the quasi-likelihood form of the binomial model CelFiE maximises by EM (Caggiano et al.
    2021, Nat Commun 12:2717) with its over-dispersion made explicit; proportions = c / Σc.

Detection (``detection_statistics``)
    For a type or a tissue (a group of types, ``tissues``) G the statistic is the drop in the
    weighted residual sum of squares when G is allowed: T_G = RSS(c_G = 0) − RSS(full), with the
    weights of the full fit. Under "G absent" T_G is (asymptotically, at the boundary c_G ≥ 0) a
    χ̄² variable (for one type: 0 half the time, else χ²₁); G is *detected* when T_G ≥ the
    (1 − 2α) quantile of χ²₁ for one type, the (1 − α) quantile of χ²_d for a group of d types
    with evidence (an upper bound), α = ``false_call_rate`` (default 0.001). The realised false-call
    rate is measured on null read mixtures of real samples (``deconflow.benchmarks.methylation
    --methsets``) and reported next to α. A tissue is tested as one group, so a tumour that the
    atlas splits between colon, small intestine and stomach is seen as gastrointestinal DNA even
    when no single type is. Intervals are Wald intervals c_G ± z·se(c_G) (se from the inverse
    weighted Gram matrix of the fitted types plus G), divided by Σc and clipped to [0, 1].
    UXM (Loyfer et al. 2023, Nature 613:355) counts fully unmethylated reads per marker and
    detects ~1 % in read mixtures; with region-level counts this test is the analogue.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import brentq, nnls
from scipy.stats import chi2, norm

from .errors import DeconflowError

#: Settings (config section ``methylation_evidence``).
EVIDENCE_DEFAULTS = {
    "marker_min_delta": 0.5,
    "marker_max_types": 3,
    "min_marker_regions": 1,
    "min_region_reads": 1,
    "false_call_rate": 0.001,
    "variance_floor": 0.01,
    "reweight_rounds": 3,
    "level": 0.9,
}

#: Tissues of the Loyfer atlas's cell types (config ``methylation_evidence.tissues`` replaces it):
#: what a biopsy or a cfDNA question is about. Blood is split into its lineages; cell types found
#: in many organs (endothelium, smooth muscle, adipocytes) are tissues of their own.
LOYFER_TISSUES = {
    "liver": ["hepatocyte"],
    "pancreas": ["pancreas_acinar", "pancreas_duct", "pancreas_alpha", "pancreas_beta", "pancreas_delta"],
    "lung": ["lung", "lung_alveolar"],
    "gastrointestinal": ["colon", "small_intestine", "gastric", "colon_fibroblasts"],
    "gallbladder": ["gallbladder"],
    "blood_myeloid": ["granulocyte", "monocyte"],
    "blood_lymphoid": ["T-cell", "NK-cell", "B-cell"],
    "blood_erythroid": ["erythrocyte_progenitor"],
    "endothelium": ["endothelial_cell"],
    "adipose": ["adipocyte"],
    "muscle": ["skeletal_muscle", "smooth_muscle"],
    "heart": ["heart_cardiomyocyte", "heart_fibroblasts"],
    "brain": ["neuron", "oligodendrocyte"],
    "bone": ["bone_osteoblast"],
    "kidney": ["kidney"],
    "thyroid": ["thyroid"],
    "female_reproductive": ["fallopian", "ovary"],
    "skin": ["epiderminal_keratinocyte", "dermal_fibroblast"],
    "head_neck": ["head_neck"],
    "prostate": ["prostate"],
    "bladder": ["bladder"],
    "breast": ["breast_luminal", "breast_basal"],
}


def evidence_settings(values: dict | None, source=None) -> dict:
    """``EVIDENCE_DEFAULTS`` updated by ``values`` (unknown keys or bad ranges: one error line)."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(EVIDENCE_DEFAULTS))
    if unknown:
        raise DeconflowError(source, f"unknown methylation_evidence settings {unknown}", f"use any of {sorted(EVIDENCE_DEFAULTS)}")
    settings = {**EVIDENCE_DEFAULTS, **{k: v for k, v in values.items() if v is not None}}
    if not 0 < float(settings["false_call_rate"]) < 0.5:
        raise DeconflowError(source, f"methylation_evidence.false_call_rate is {settings['false_call_rate']}", "give a rate in (0, 0.5), e.g. 0.01")
    if not 0 < float(settings["marker_min_delta"]) < 1:
        raise DeconflowError(source, f"methylation_evidence.marker_min_delta is {settings['marker_min_delta']}", "give a beta difference in (0, 1), e.g. 0.3")
    if int(settings["min_marker_regions"]) < 1 or int(settings["min_region_reads"]) < 1:
        raise DeconflowError(source, "methylation_evidence.min_marker_regions and min_region_reads must be ≥ 1", "give 1 or more")
    return settings


def marker_regions(atlas: np.ndarray, min_delta: float = EVIDENCE_DEFAULTS["marker_min_delta"],
                   max_types: int = EVIDENCE_DEFAULTS["marker_max_types"]) -> np.ndarray:
    """Bool (regions x types): β_rk is ≥ ``min_delta`` below (U-marker) or above (M-marker) the
    region's median over all types, and at most ``max_types`` types share that side."""
    atlas = np.asarray(atlas, dtype=np.float64)
    median = np.median(atlas, axis=1, keepdims=True)
    low = atlas - median <= -min_delta
    high = atlas - median >= min_delta
    return (low & (low.sum(axis=1, keepdims=True) <= max_types)) | (high & (high.sum(axis=1, keepdims=True) <= max_types))


def type_evidence(coverage: np.ndarray, markers: np.ndarray, min_region_reads: int = 1, min_marker_regions: int = 1) -> dict:
    """Per sample and type: covered marker regions, calls on them, and whether that is evidence.

    ``coverage``: samples x regions (calls; 0 or NaN = none); ``markers``: regions x types.
    Returns ``{"regions": int (samples x types), "reads": float, "evidence": bool}``.
    """
    coverage = np.nan_to_num(np.atleast_2d(np.asarray(coverage, dtype=np.float64)), nan=0.0)
    covered = coverage >= min_region_reads
    regions = covered.astype(np.int64) @ markers.astype(np.int64)
    reads = (coverage * covered) @ markers.astype(np.float64)
    return {"regions": regions, "reads": reads, "evidence": regions >= min_marker_regions}


def _wnnls(design: np.ndarray, x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, float]:
    root = np.sqrt(weights)
    coef, norm_ = nnls(design * root[:, None], x * root, maxiter=50 * max(design.shape[1], 1))
    return coef, float(norm_ * norm_)


class _Gram:
    """NNLS of one weighted system on any subset of its columns through the normal equations:
    with G = AᵀA = RᵀR, ||A c − b||² = ||R c − R⁻ᵀAᵀb||² + ||b||² − ||R⁻ᵀAᵀb||², so each subset
    is a types x types problem; subsets with a singular G are solved on A itself."""

    def __init__(self, A: np.ndarray, b: np.ndarray):
        self.A, self.b = A, b
        self.G, self.h, self.bb = A.T @ A, A.T @ b, float(b @ b)

    def solve(self, cols: np.ndarray) -> tuple[np.ndarray, float]:
        from scipy.linalg import solve_triangular

        idx = np.flatnonzero(cols)
        if len(idx) == 0:
            return np.zeros(0), self.bb
        G = self.G[np.ix_(idx, idx)]
        try:
            R = np.linalg.cholesky(G).T
            if np.diag(R).min() <= 1e-8 * np.diag(R).max():
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            coef, norm_ = nnls(self.A[:, idx], self.b, maxiter=50 * len(idx))
            return coef, float(norm_ * norm_)
        y = solve_triangular(R, self.h[idx], trans="T")
        coef, norm_ = nnls(R, y, maxiter=50 * len(idx))
        return coef, max(self.bb - float(y @ y) + float(norm_ * norm_), 0.0)


def _dispersion(residual2: np.ndarray, base_var: np.ndarray, n: np.ndarray, dof: int) -> float:
    """ρ ≥ 0 with Σ r² / (v (1/n + ρ)) = dof (0 when the binomial alone is enough)."""
    if dof <= 0:
        return 0.0

    def excess(rho):
        return float(np.sum(residual2 / (base_var * (1.0 / n + rho)))) - dof

    if excess(0.0) <= 0:
        return 0.0
    hi = 1.0
    while excess(hi) > 0 and hi < 1e6:
        hi *= 10.0
    return float(brentq(excess, 0.0, hi, xtol=1e-10, rtol=1e-8))


def read_fit(signature: np.ndarray, fractions: np.ndarray, coverage: np.ndarray, columns: np.ndarray | None = None,
             settings: dict | None = None) -> dict:
    """Beta-binomial-weighted NNLS of one sample (module docstring).

    ``signature``: regions x types betas; ``fractions``/``coverage``: regions (NaN / 0 = no
    calls); ``columns``: bool per type, the types that may be fitted (evidence). Returns
    ``coef`` (types; 0 outside ``columns``), ``rho``, ``rss``, ``columns`` and ``system`` (the
    weighted least-squares problem, for :func:`detection_statistics`; None without reads).
    """
    settings = {**EVIDENCE_DEFAULTS, **(settings or {})}
    signature = np.asarray(signature, dtype=np.float64)
    x = np.asarray(fractions, dtype=np.float64)
    n = np.nan_to_num(np.asarray(coverage, dtype=np.float64), nan=0.0)
    n_types = signature.shape[1]
    cols = np.ones(n_types, dtype=bool) if columns is None else np.asarray(columns, dtype=bool).copy()
    rows = np.isfinite(x) & (n > 0)
    coef = np.zeros(n_types)
    if not rows.any() or not cols.any():
        return {"coef": coef, "rho": float("nan"), "rss": float("nan"), "columns": cols, "system": None}
    S, xr, nr = signature[rows], x[rows], n[rows]
    floor = float(settings["variance_floor"])
    rho = 0.0
    weights = 1.0 / (0.25 * (1.0 / nr + 0.01))
    for _ in range(max(int(settings["reweight_rounds"]), 1)):
        system = _Gram(S * np.sqrt(weights)[:, None], xr * np.sqrt(weights))
        coef_c, _ = system.solve(cols)
        coef[:] = 0.0
        coef[cols] = coef_c
        mu = np.clip(S @ coef, 0.0, 1.0)
        base = np.maximum(mu * (1.0 - mu), floor)
        rho = _dispersion((xr - mu) ** 2, base, nr, len(xr) - int((coef > 0).sum()))
        weights = 1.0 / (base * (1.0 / nr + rho))
    system = _Gram(S * np.sqrt(weights)[:, None], xr * np.sqrt(weights))
    coef_c, rss = system.solve(cols)
    coef[:] = 0.0
    coef[cols] = coef_c
    return {"coef": coef, "rho": rho, "rss": rss, "columns": cols, "system": system}


def detection_statistics(fit: dict, groups: dict[str, np.ndarray], level: float = EVIDENCE_DEFAULTS["level"],
                         only_positive: bool = False) -> pd.DataFrame:
    """Per group (name -> bool mask over types): estimate, lower, upper, statistic T_G, df.

    ``fit`` from :func:`read_fit`; ``df`` = the group's types with evidence. Groups without a
    fitted type get NaN everywhere ("no evidence"). Estimates and bounds are shares of Σc.
    ``only_positive``: skip the refit (T = 0, no interval) for groups with no fitted mass.
    """
    coef, cols, system = fit["coef"], fit["columns"], fit["system"]
    total = coef.sum()
    out = []
    z = float(norm.ppf(0.5 + level / 2.0))
    active = (coef > 0) & cols
    for name, mask in groups.items():
        mask = np.asarray(mask, dtype=bool) & cols
        row = {"name": name, "estimate": np.nan, "lower": np.nan, "upper": np.nan, "statistic": np.nan, "df": int(mask.sum())}
        if system is None or total <= 0 or not mask.any():
            out.append(row)
            continue
        row["estimate"] = coef[mask].sum() / total
        if only_positive and coef[mask].sum() <= 0:
            row["statistic"] = 0.0
            out.append(row)
            continue
        _, rss0 = system.solve(cols & ~mask)
        row["statistic"] = max(rss0 - fit["rss"], 0.0)
        use = active | mask
        cov = np.linalg.pinv(system.G[np.ix_(use, use)])
        in_group = mask[use].astype(np.float64)
        se = float(np.sqrt(max(in_group @ cov @ in_group, 0.0))) / total
        row["lower"], row["upper"] = max(row["estimate"] - z * se, 0.0), min(row["estimate"] + z * se, 1.0)
        out.append(row)
    return pd.DataFrame(out, columns=["name", "estimate", "lower", "upper", "statistic", "df"])


def detection_threshold(false_call_rate: float, df=1):
    """T_G threshold for a group of ``df`` fitted types: the (1 − 2α) quantile of χ²₁ for one
    type (one-sided test at the boundary c ≥ 0), the (1 − α) quantile of χ²_df for more (an
    upper bound of the χ̄² mixture of a group at the boundary). Array in, array out."""
    df = np.asarray(df)
    alpha = float(false_call_rate)
    out = np.where(df <= 1, chi2.ppf(1.0 - 2.0 * alpha, 1), chi2.ppf(1.0 - alpha, np.maximum(df, 1)))
    return float(out) if out.ndim == 0 else out


def tissue_masks(cell_types, tissues: dict | None) -> dict[str, np.ndarray]:
    """Tissue -> bool mask over ``cell_types`` from a ``{tissue: [types]}`` mapping (types not in
    the atlas are ignored; an empty mapping gives none)."""
    cell_types = [str(t) for t in cell_types]
    out = {}
    for tissue, types in (tissues or {}).items():
        mask = np.array([t in set(map(str, types)) for t in cell_types])
        if mask.any():
            out[str(tissue)] = mask
    return out


def resolve_tissues(tissues: dict | None, cell_types) -> dict:
    """The ``{tissue: [types]}`` mapping to use: ``tissues`` if given, else
    ``LOYFER_TISSUES``; only types of the atlas are kept (an atlas of other names without a
    mapping has no tissues)."""
    known = set(map(str, cell_types))
    chosen = LOYFER_TISSUES if tissues is None else tissues
    out = {str(t): [c for c in map(str, types) if c in known] for t, types in chosen.items()}
    return {t: types for t, types in out.items() if types}


def check_tissues(tissues: dict | None, cell_types, source=None) -> dict:
    """A ``{tissue: [cell types]}`` mapping checked against the atlas: every named type exists and
    none is in two tissues."""
    tissues = dict(tissues or {})
    known = set(map(str, cell_types))
    seen: dict[str, str] = {}
    for tissue, types in tissues.items():
        if isinstance(types, str) or not isinstance(types, (list, tuple)):
            raise DeconflowError(source, f"tissue {tissue!r} maps to {types!r}", "give a list of atlas cell types, e.g. liver: [hepatocyte]")
        for t in map(str, types):
            if t not in known:
                raise DeconflowError(source, f"tissue {tissue!r} names {t!r}, not a cell type of the atlas",
                                     f"use the atlas's names ({', '.join(sorted(known)[:8])}, ...)")
            if t in seen:
                raise DeconflowError(source, f"cell type {t!r} is in two tissues ({seen[t]!r}, {tissue!r})", "put every cell type in one tissue")
            seen[t] = str(tissue)
    return tissues


def supported_types(coef: np.ndarray, type_detected: np.ndarray, tissue_detected: dict[str, bool],
                    masks: dict[str, np.ndarray]) -> np.ndarray:
    """Types the reads support: fitted mass and either the type itself or its tissue detected."""
    keep = np.asarray(type_detected, dtype=bool).copy()
    for tissue, detected in tissue_detected.items():
        if detected:
            keep |= masks[tissue]
    return keep & (np.asarray(coef) > 0)


def analyse_reads(signature: np.ndarray, cell_types, fractions: np.ndarray, coverage: np.ndarray, tissues: dict | None = None,
                  settings: dict | None = None, markers: np.ndarray | None = None, full_table: bool = True) -> dict:
    """Evidence, fit and detection for every sample (samples x regions fractions and calls).

    Returns ``evidence`` (:func:`type_evidence`), ``proportions`` (samples x types, shares of the
    read fit; NaN = no evidence), ``supported`` (samples x types bool, :func:`supported_types`),
    ``rho`` (samples), ``markers`` and, when ``full_table``, ``detection``: a long table
    (sample index, level "cell_type" / "tissue", name, estimate, lower, upper, statistic, df,
    threshold, evidence, detected; cell types also ``regions`` and ``reads`` on their markers).
    """
    settings = {**EVIDENCE_DEFAULTS, **(settings or {})}
    signature = np.asarray(signature, dtype=np.float64)
    cell_types = [str(t) for t in cell_types]
    fractions = np.atleast_2d(np.asarray(fractions, dtype=np.float64))
    coverage = np.atleast_2d(np.nan_to_num(np.asarray(coverage, dtype=np.float64), nan=0.0))
    if markers is None:
        markers = marker_regions(signature, float(settings["marker_min_delta"]), int(settings["marker_max_types"]))
    evidence = type_evidence(coverage, markers, int(settings["min_region_reads"]), int(settings["min_marker_regions"]))
    types = {t: np.arange(len(cell_types)) == k for k, t in enumerate(cell_types)}
    tissue_groups = tissue_masks(cell_types, tissues)
    alpha = float(settings["false_call_rate"])
    n = len(fractions)
    proportions = np.full((n, len(cell_types)), np.nan)
    supported = np.zeros((n, len(cell_types)), dtype=bool)
    rho = np.full(n, np.nan)
    tables = []
    for i in range(n):
        fit = read_fit(signature, fractions[i], coverage[i], evidence["evidence"][i], settings)
        rho[i] = fit["rho"]
        total = fit["coef"].sum()
        if total > 0:
            proportions[i] = np.where(evidence["evidence"][i], fit["coef"] / total, np.nan)
        per_type = detection_statistics(fit, types, float(settings["level"]), only_positive=not full_table)
        per_tissue = detection_statistics(fit, tissue_groups, float(settings["level"]), only_positive=not full_table)
        for table in (per_type, per_tissue):
            table["threshold"] = detection_threshold(alpha, table["df"].to_numpy()) if len(table) else []
            table["evidence"] = table["df"] > 0
            table["detected"] = table["evidence"] & (table["statistic"].fillna(0.0) >= table["threshold"])
        supported[i] = supported_types(fit["coef"], per_type["detected"].to_numpy(),
                                       dict(zip(per_tissue["name"], per_tissue["detected"])), tissue_groups)
        if full_table:
            per_type.insert(0, "level", "cell_type")
            per_type["regions"] = evidence["regions"][i]
            per_type["reads"] = evidence["reads"][i]
            per_tissue.insert(0, "level", "tissue")
            for table in (per_type, per_tissue):
                table.insert(0, "sample", i)
                tables.append(table)
    result = {"evidence": evidence, "proportions": proportions, "supported": supported, "rho": rho, "markers": markers}
    if full_table:
        result["detection"] = pd.concat(tables, ignore_index=True)
    return result
