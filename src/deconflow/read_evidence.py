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
    weighted residual sum of squares when G is allowed: T_G = RSS(c_G = 0) − RSS(with G), with
    the weights of the full fit. A tissue of several types enters as one column, its types in the
    proportions the full fit gave them, so every test has one degree of freedom and a tumour that
    the atlas splits between colon, small intestine and stomach is seen as gastrointestinal DNA
    even when no single type is. Under "G absent" T_G is 0 half the time and χ²₁ otherwise (a
    one-sided test at the boundary c_G ≥ 0), so G is *detected* when T_G ≥ κ · the (1 − 2α)
    quantile of χ²₁, α = ``false_call_rate`` (default 0.001). The beta-binomial model assumes the
    sample differs from the atlas only by chance; real donors differ at particular regions, so
    on null read mixtures of real Roadmap tissues (two tissues, a third one's tissue absent) the
    realised rate at κ = 1 was 3.1 % of (sample, tissue) pairs. ``null_inflation`` κ = 1.25
    (threshold 11.9) was calibrated on those null mixtures: realised 1.4 %, 0.5 % without the
    gastrointestinal-like DNA of the liver sample (bile-duct epithelium, real), while a tissue at
    5 % is still found in every draw for the liver, pancreas and colon samples whose own cell type
    is ≥ 50 % of their DNA (``deconflow.benchmarks.methylation --methsets``; docs/methylation-reads.md).
    Intervals are Wald intervals c_G ± z·se(c_G) (se from the inverse weighted Gram matrix of the
    fitted types plus G), divided by Σc and clipped to [0, 1].
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
    "null_inflation": 1.25,
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
    if float(settings["null_inflation"]) <= 0:
        raise DeconflowError(source, f"methylation_evidence.null_inflation is {settings['null_inflation']}", "give a positive factor, e.g. 1.25")
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

    def __init__(self, A: np.ndarray, b: np.ndarray, normal: tuple | None = None):
        self.A, self.b = A, b
        self.G, self.h, self.bb = (A.T @ A, A.T @ b, float(b @ b)) if normal is None else normal

    def merged(self, rest: np.ndarray, group: np.ndarray, weights: np.ndarray) -> "_Gram":
        """The system on columns ``rest`` plus one column Σ_k∈group w_k A_k, from G and h (no
        pass over the rows; the rows are built only if the Cholesky path fails)."""
        r, g = np.flatnonzero(rest), np.flatnonzero(group)
        Ggw = self.G[np.ix_(r, g)] @ weights
        G = np.block([[self.G[np.ix_(r, r)], Ggw[:, None]], [Ggw[None, :], np.array([[weights @ self.G[np.ix_(g, g)] @ weights]])]])
        h = np.concatenate([self.h[r], [weights @ self.h[g]]])
        return _LazyGram(self, r, g, weights, (G, h, self.bb))

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


class _LazyGram(_Gram):
    def __init__(self, parent: _Gram, rest, group, weights, normal):
        self.parent, self.rest, self.group, self.weights = parent, rest, group, weights
        self.G, self.h, self.bb = normal
        self.b = parent.b

    @property
    def A(self):
        return np.column_stack([self.parent.A[:, self.rest], self.parent.A[:, self.group] @ self.weights])


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


def _group_rows(fit: dict, groups: dict[str, np.ndarray], level: float, intervals: bool = True) -> list[dict]:
    """Rows of :func:`detection_statistics` (list of dicts, no DataFrame: called per sample)."""
    coef, cols, system = fit["coef"], fit["columns"], fit["system"]
    total = coef.sum()
    out = []
    z = float(norm.ppf(0.5 + level / 2.0))
    active = (coef > 0) & cols
    for name, mask in groups.items():
        mask = np.asarray(mask, dtype=bool) & cols
        row = {"name": name, "estimate": np.nan, "lower": np.nan, "upper": np.nan, "statistic": np.nan, "df": int(mask.sum())}
        out.append(row)
        if system is None or total <= 0 or not mask.any():
            continue
        mass = coef[mask].sum()
        row["estimate"] = mass / total
        if mass <= 0:
            row["statistic"] = 0.0  # removing columns without mass leaves the optimum as it is
        else:
            _, rss0 = system.solve(cols & ~mask)
            if mask.sum() > 1:
                # the group as one column, its types in the proportions of the full fit: a test of
                # one degree of freedom for "the tissue's DNA is present" (module docstring)
                merged = system.merged(cols & ~mask, mask, coef[mask] / mass)
                _, rss1 = merged.solve(np.ones(len(merged.h), dtype=bool))
            else:
                rss1 = fit["rss"]
            row["statistic"] = max(rss0 - rss1, 0.0)
        if not intervals:
            continue
        use = active | mask
        indicator = mask[use].astype(np.float64)
        gram = system.G[np.ix_(use, use)]
        try:
            variance = float(indicator @ np.linalg.solve(gram, indicator))
        except np.linalg.LinAlgError:
            variance = float(indicator @ np.linalg.pinv(gram) @ indicator)
        se = np.sqrt(max(variance, 0.0)) / total
        row["lower"], row["upper"] = max(row["estimate"] - z * se, 0.0), min(row["estimate"] + z * se, 1.0)
    return out


def detection_statistics(fit: dict, groups: dict[str, np.ndarray], level: float = EVIDENCE_DEFAULTS["level"]) -> pd.DataFrame:
    """Per group (name -> bool mask over types): estimate, lower, upper, statistic T_G, df.

    ``fit`` from :func:`read_fit`; ``df`` = degrees of freedom of the test (1; 0 when the group
    has no type with evidence). A group of several types is tested as one column whose types
    keep their proportions of the full fit. Groups without a fitted type get NaN everywhere ("no
    evidence"). Estimates and bounds are shares of Σc; bounds are Wald bounds at ``level``.
    """
    return pd.DataFrame(_group_rows(fit, groups, level), columns=["name", "estimate", "lower", "upper", "statistic", "df"])


def detection_threshold(false_call_rate: float, null_inflation: float = 1.0) -> float:
    """T_G threshold: ``null_inflation`` x the (1 − 2α) quantile of χ²₁ (a one-sided test of one
    degree of freedom at the boundary c ≥ 0; module docstring)."""
    return float(null_inflation) * float(chi2.ppf(1.0 - 2.0 * float(false_call_rate), 1))


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
    ``rho`` (samples), ``markers``, ``threshold`` and, when ``full_table``, ``detection``: a long
    table (sample index, level "cell_type" / "tissue", name, estimate, lower, upper, statistic,
    df, threshold, evidence, detected, regions, reads; regions and reads = the sample's covered
    marker regions and their calls, for tissues summed over the tissue's types).
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
    threshold = detection_threshold(settings["false_call_rate"], settings["null_inflation"])
    n = len(fractions)
    proportions = np.full((n, len(cell_types)), np.nan)
    supported = np.zeros((n, len(cell_types)), dtype=bool)
    rho = np.full(n, np.nan)
    rows = []
    tissue_index = {name: np.flatnonzero(mask) for name, mask in tissue_groups.items()}
    for i in range(n):
        fit = read_fit(signature, fractions[i], coverage[i], evidence["evidence"][i], settings)
        rho[i] = fit["rho"]
        total = fit["coef"].sum()
        if total > 0:
            proportions[i] = np.where(evidence["evidence"][i], fit["coef"] / total, np.nan)
        per_type = _group_rows(fit, types, float(settings["level"]), intervals=full_table)
        per_tissue = _group_rows(fit, tissue_groups, float(settings["level"]), intervals=full_table)
        type_detected = np.array([r["df"] > 0 and (r["statistic"] or 0.0) >= threshold for r in per_type])
        tissue_detected = {r["name"]: bool(r["df"] > 0 and (r["statistic"] or 0.0) >= threshold) for r in per_tissue}
        supported[i] = supported_types(fit["coef"], type_detected, tissue_detected, tissue_groups)
        if full_table:
            for k, r in enumerate(per_type):
                rows.append({"sample": i, "level": "cell_type", **r, "regions": int(evidence["regions"][i, k]),
                             "reads": int(evidence["reads"][i, k]), "detected": bool(type_detected[k])})
            for r in per_tissue:
                idx = tissue_index[r["name"]]
                rows.append({"sample": i, "level": "tissue", **r, "regions": int(evidence["regions"][i, idx].sum()),
                             "reads": int(evidence["reads"][i, idx].sum()), "detected": tissue_detected[r["name"]]})
    result = {"evidence": evidence, "proportions": proportions, "supported": supported, "rho": rho, "markers": markers,
              "threshold": threshold}
    if full_table:
        detection = pd.DataFrame(rows, columns=["sample", "level", "name", "estimate", "lower", "upper", "statistic", "df",
                                                "regions", "reads", "detected"])
        detection.insert(detection.columns.get_loc("regions"), "threshold", threshold)
        detection.insert(detection.columns.get_loc("regions"), "evidence", detection["df"] > 0)
        result["detection"] = detection
    return result
