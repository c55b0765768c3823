"""Methylation models on real bisulfite reads (issue 32): ``../shared/methsets`` read by path.

    python -m deconflow.benchmarks.methylation --methsets ../shared/methsets --models results/cfdna/models

Sets (each described by its README in the methsets folder; never copied into the repository):

- ``uxm_roadmap``: Roadmap WGBS of liver, lung x2, pancreas x2, sigmoid colon x2 on the UXM
  U-marker panel (~500 atlas regions) and 12 read-level mixtures of them (Loyfer et al. 2023).
  Scored at tissue level (``deconflow.read_evidence.LOYFER_TISSUES``; Sigmoid_Colon ->
  gastrointestinal): per tissue group r over the mixtures, and whether each pure tissue's own
  group is the largest of the four.
- ``celfie_wgbs``: Blueprint / ENCODE sorted-cell WGBS (60 regions, blood markers; Caggiano et
  al. 2021): the atlas type each reference maps to, its share and the largest type.
- **Low-fraction read mixtures** drawn here from the pure Roadmap samples: tissue A at fraction
  f in tissue B (every ordered pair of different tissues) by binomial thinning of each sample's
  methylated and unmethylated calls per region (:func:`draw_read_mixture`, depth-normalised as
  the set's own MIX samples were). Per f: the share of draws in which A's tissue is detected
  (the read test of ``detection.csv``, shared by all models) or reported (> 0) by each model, and
  the share of (draw, tissue) pairs in which a tissue absent from both samples is called.
  "Absent" excludes the cell types every solid tissue carries (blood lineages, endothelium,
  muscle, adipose), whose presence in a Roadmap tissue is real.
- **Oracle bound** (:func:`oracle_power`) for the same design: the power of the best test that
  knows both samples' own profiles, per pair and fraction, on all covered regions and on the
  marker regions of A's tissue only; and per source the share of its own tissue group in the
  nnls fit of the pure sample (how much of "lung" DNA is lung epithelium).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..deconvolve import methylation_read_tables
from ..errors import DeconflowError
from ..evaluation import pearson_r
from ..models import load_model
from ..read_evidence import EVIDENCE_DEFAULTS, LOYFER_TISSUES, analyse_reads, evidence_settings, marker_regions, resolve_tissues

#: Roadmap truth columns -> tissues of LOYFER_TISSUES
ROADMAP_TISSUES = {"Liver": "liver", "Lung": "lung", "Pancreas": "pancreas", "Sigmoid_Colon": "gastrointestinal"}
#: tissues present in any solid-tissue sample (not "absent" in a read mixture of two tissues)
UBIQUITOUS = ("blood_myeloid", "blood_lymphoid", "blood_erythroid", "endothelium", "muscle", "adipose")
FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1)
METHSETS_ENV = "DECONFLOW_METHSETS"


def find_methsets(path=None) -> Path | None:
    """The methsets folder: ``path``, else $DECONFLOW_METHSETS, else ``../shared/methsets`` or
    ``../../shared/methsets`` of the repository; None when none exists."""
    import os

    root = Path(__file__).resolve().parents[3]
    for candidate in (path, os.environ.get(METHSETS_ENV), root.parent / "shared" / "methsets", root.parent.parent / "shared" / "methsets"):
        if candidate and (Path(candidate) / "uxm_roadmap_counts.tsv").is_file():
            return Path(candidate)
    return None


def read_counts(path, feature_names) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``<set>_counts.tsv`` (chr, start, end, ..., <sample>_meth, <sample>_total) aligned to the
    atlas regions ``chr:start-end``: (samples, methylated, total), samples x regions, 0 where a
    region has no row. Rows outside the atlas are dropped."""
    path = Path(path)
    if not path.is_file():
        raise DeconflowError(path, "methsets counts file does not exist", "give the folder that holds <set>_counts.tsv (../shared/methsets)")
    table = pd.read_csv(path, sep="\t")
    ids = table["chr"].astype(str) + ":" + table["start"].astype(str) + "-" + table["end"].astype(str)
    position = pd.Index(np.asarray(feature_names).astype(str)).get_indexer(ids)
    keep = position >= 0
    samples = [c[: -len("_meth")] for c in table.columns if c.endswith("_meth")]
    methylated = np.zeros((len(samples), len(feature_names)))
    total = np.zeros_like(methylated)
    for i, sample in enumerate(samples):
        methylated[i, position[keep]] = np.rint(table[f"{sample}_meth"].to_numpy(dtype=np.float64)[keep])
        total[i, position[keep]] = np.rint(table[f"{sample}_total"].to_numpy(dtype=np.float64)[keep])
    return samples, methylated, total


def fractions_of(methylated: np.ndarray, total: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, methylated / np.maximum(total, 1), np.nan)


def thinning(total_a, total_b, fraction: float) -> tuple[float, float]:
    """(k_A, k_B): the probabilities with which :func:`draw_read_mixture` keeps each call of A and
    of B, f·D/d_A and (1 − f)·D/d_B, d = mean calls per covered region, D = min(d_A, d_B) (the
    depth normalisation of the uxm_roadmap MIX samples)."""
    def depth(total):
        covered = total > 0
        return total[covered].mean() if covered.any() else 0.0

    d_a, d_b = depth(np.asarray(total_a)), depth(np.asarray(total_b))
    d = min(d_a, d_b)
    return fraction * d / d_a, (1.0 - fraction) * d / d_b


def draw_read_mixture(meth_a, total_a, meth_b, total_b, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Calls of a read mixture with DNA fraction ``fraction`` of sample A in sample B: every
    methylated and unmethylated call of A and of B kept with the probabilities of
    :func:`thinning` (binomial thinning). Returns (methylated, total)."""
    keep_a, keep_b = thinning(total_a, total_b, fraction)
    meth = rng.binomial(meth_a.astype(np.int64), keep_a) + rng.binomial(meth_b.astype(np.int64), keep_b)
    unmeth = rng.binomial((total_a - meth_a).astype(np.int64), keep_a) + rng.binomial((total_b - meth_b).astype(np.int64), keep_b)
    return meth.astype(np.float64), (meth + unmeth).astype(np.float64)


def run_models(models: dict, methylated: np.ndarray, total: np.ndarray, sample_ids, settings: dict | None = None) -> dict:
    """Per model: (proportions DataFrame, tissues DataFrame); plus ``"_detection"``: the shared
    read test's long table. All through ``deconvolve.methylation_read_tables`` (the CLI's path)."""
    settings = dict(settings or {})
    first = next(iter(models.values()))
    tissues = resolve_tissues(settings.pop("tissues", None), first.cell_types)
    features = fractions_of(methylated, total)
    analysis = analyse_reads(first.atlas_betas(), first.cell_types, features, total, tissues, evidence_settings(settings))
    out = {}
    for name, model in models.items():
        started = time.perf_counter()
        proportions, tables, _ = methylation_read_tables(model, features, total, sample_ids, list(sample_ids),
                                                         {**settings, "tissues": tissues}, analysis=analysis)
        out[name] = (pd.DataFrame(proportions, index=pd.Index(sample_ids, name="sample_id"), columns=model.cell_types),
                     tables["tissues"].set_index("sample_id"), time.perf_counter() - started)
        out["_detection"] = tables["detection"]
    return out


# --------------------------------------------------------------------------- Roadmap
def roadmap_scores(tissue_tables: dict[str, pd.DataFrame], truth: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pure-tissue table, mixture r table). Pure: per model and sample the four truth groups'
    shares and whether the sample's own group is the largest; mixtures: per model and group the
    Pearson r of the group's estimate with the truth fraction over the read mixtures."""
    groups = list(ROADMAP_TISSUES.values())
    pure = truth.index[truth["kind"] == "pure_tissue"]
    mixtures = truth.index[truth["kind"] == "read_mixture"]
    pure_rows, r_rows = [], []
    for model, table in tissue_tables.items():
        for sample in pure:
            own = ROADMAP_TISSUES[truth.loc[sample, list(ROADMAP_TISSUES)].astype(float).idxmax()]
            shares = table.loc[sample, groups].astype(float)
            pure_rows.append({"model": model, "sample": sample, **shares.round(3).to_dict(),
                              "own_largest": bool(shares.fillna(-1).idxmax() == own)})
        row = {"model": model}
        for column, group in ROADMAP_TISSUES.items():
            row[f"r_{group}"] = pearson_r(truth.loc[mixtures, column].to_numpy(dtype=float), table.loc[mixtures, group].to_numpy(dtype=float))
        r_rows.append(row)
    return pd.DataFrame(pure_rows), pd.DataFrame(r_rows)


# --------------------------------------------------------------------------- celfie
def celfie_scores(proportions: dict[str, pd.DataFrame], truth: pd.DataFrame) -> pd.DataFrame:
    """Sorted-cell references with a mapped atlas type: its share and the largest type, per model."""
    mapped = truth[(truth["kind"] == "reference_WGBS") & truth["atlas_fraction"].notna()]
    rows = []
    for model, table in proportions.items():
        for sample, entry in mapped.iterrows():
            shares = table.loc[sample].astype(float)
            rows.append({"model": model, "sample": sample, "mapped_type": entry["atlas_celltype"],
                         "mapped_share": round(float(shares.get(entry["atlas_celltype"], np.nan)), 3),
                         "largest": shares.idxmax(), "largest_share": round(float(shares.max()), 3),
                         "no_evidence_types": int(shares.isna().sum())})
    return pd.DataFrame(rows)


def plasma_calls(detection: pd.DataFrame, tissue_tables: dict[str, pd.DataFrame], truth: pd.DataFrame) -> pd.DataFrame:
    """celfie plasma cfDNA samples (qualitative truth: blood-dominated): per sample the tissues
    the read test detects and, per model, the non-blood tissues with a share > 0 and their share."""
    plasma = truth.index[truth["kind"] == "cfDNA_plasma"]
    tests = detection[detection["level"] == "tissue"].pivot(index="sample_id", columns="name", values="detected")
    rows = []
    for sample in plasma:
        row = {"sample": sample, "detected_tissues": ";".join(t for t in tests.columns if tests.loc[sample, t] == 1)}
        for model, table in tissue_tables.items():
            shares = table.loc[sample].astype(float)
            solid = shares[[t for t in shares.index if not t.startswith("blood_")]].dropna()
            solid = solid[solid > 0]
            row[f"{model}_non_blood"] = ";".join(f"{t} {v:.2f}" for t, v in solid.items())
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- low fractions
def draw_pairs(samples, methylated, total, truth: pd.DataFrame, fractions=FRACTIONS, draws: int = 10, seed: int = 0):
    """Read mixtures of every ordered pair (A, B) of pure Roadmap samples of different tissues at
    each fraction: (labels DataFrame a, b, f, draw indexed by sample id, methylated, total)."""
    rng = np.random.default_rng(seed)
    pure = [s for s in truth.index[truth["kind"] == "pure_tissue"] if s in samples]
    tissue_of = pure_tissues(truth)
    index = {s: samples.index(s) for s in pure}
    labels, meths, totals = [], [], []
    for a in pure:
        for b in pure:
            if tissue_of[a] == tissue_of[b]:
                continue
            for f in fractions:
                for d in range(draws):
                    m, t = draw_read_mixture(methylated[index[a]], total[index[a]], methylated[index[b]], total[index[b]], f, rng)
                    labels.append((a, b, f, d))
                    meths.append(m)
                    totals.append(t)
    frame = pd.DataFrame(labels, columns=["a", "b", "f", "draw"], index=[f"{a}|{b}|{f}|{d}" for a, b, f, d in labels])
    return frame, np.array(meths), np.array(totals)


def pure_tissues(truth: pd.DataFrame) -> dict:
    pure = truth.index[truth["kind"] == "pure_tissue"]
    return {s: ROADMAP_TISSUES[truth.loc[s, list(ROADMAP_TISSUES)].astype(float).idxmax()] for s in pure}


def score_curves(called: dict[str, pd.DataFrame], frame: pd.DataFrame, truth: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per method (draws x tissues, 1.0 = called present, NaN = no evidence) and fraction: the
    detection rate of A's tissue and the false-call rate of absent tissues (module docstring);
    and the detection rate per source sample A."""
    tissue_of = pure_tissues(truth)
    fractions = sorted(frame["f"].unique())
    rows, per_source = [], []
    for method, table in called.items():
        table = table.loc[frame.index]
        tissues = list(table.columns)
        target = np.array([table.loc[i, tissue_of[a]] for i, a in zip(frame.index, frame["a"])], dtype=np.float64)
        absent = np.array([[t not in UBIQUITOUS and t != tissue_of[b] and (t != tissue_of[a] or f == 0) for t in tissues]
                           for a, b, f in zip(frame["a"], frame["b"], frame["f"])])
        values = table.to_numpy(dtype=np.float64)
        false = np.where(absent & np.isfinite(values), values, np.nan)
        explained = np.array([[t == "gastrointestinal" and tissue_of[b] == "liver" for t in tissues] for b in frame["b"]])
        for f in fractions:
            sel = (frame["f"] == f).to_numpy()
            rows.append({"method": method, "fraction": f, "detected": float(np.nanmean(target[sel])) if f > 0 else np.nan,
                         "false_calls": float(np.nanmean(false[sel])),
                         "false_calls_no_gi_in_liver": float(np.nanmean(np.where(explained[sel], np.nan, false[sel]))),
                         "n_draws": int(sel.sum())})
            if f > 0:
                for a in tissue_of:
                    pick = sel & (frame["a"] == a).to_numpy()
                    if pick.any():
                        per_source.append({"method": method, "source": a, "fraction": f, "detected": float(np.nanmean(target[pick]))})
    return pd.DataFrame(rows), pd.DataFrame(per_source).pivot_table(index=["method", "source"], columns="fraction", values="detected")


def low_fraction_curves(models: dict, samples, methylated, total, truth: pd.DataFrame, fractions=FRACTIONS,
                        draws: int = 10, seed: int = 0, settings: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detection and false calls on read mixtures of pure Roadmap samples (module docstring):
    the read test of ``detection.csv`` and each model's reported tissue share > 0."""
    frame, meths, totals = draw_pairs(samples, methylated, total, truth, fractions, draws, seed)
    results = run_models(models, meths, totals, list(frame.index), settings)
    detection = results.pop("_detection")
    tests = detection[detection["level"] == "tissue"].pivot(index="sample_id", columns="name", values="detected")
    called = {"read test": tests.astype(float)}
    for name, (_, tissues, _) in results.items():
        called[name] = (tissues.astype(float) > 0).astype(float).where(tissues.notna())
    return score_curves(called, frame, truth)


# --------------------------------------------------------------------------- oracle bound
def oracle_power(meth_a, total_a, meth_b, total_b, fraction: float, false_call_rate: float = 0.001,
                 regions: np.ndarray | None = None) -> tuple[float, float]:
    """(λ, power): an UPPER BOUND on the power of any test of "A is in B" at DNA fraction
    ``fraction`` for the read mixtures of :func:`draw_read_mixture`.

    ``meth_*`` / ``total_*``: methylated and total calls per region (1-D, same regions) of the
    pure samples A and B; ``regions``: optional bool mask of the regions to use (default all);
    ``false_call_rate``: the one-sided level α. The oracle knows both samples' own profiles,
    μ_A = (m_A + 0.5)/(n_A + 1) and μ_0 = (m_B + 0.5)/(n_B + 1) per region (the +0.5 / +1 keeps
    0 and 1 away), and the expected thinned depth n_r = k_A·n_A,r + k_B·n_B,r of the design
    (k of :func:`thinning`). The mixture's beta is μ_1 = μ_0 + w_r·(μ_A − μ_0), w_r =
    k_A·n_A,r / n_r the share of region r's calls from A, so λ = 0 and power = α at f = 0. Treating
    every call as an independent binomial draw, the likelihood-ratio test of μ_0 against μ_1 has
    noncentrality λ = Σ_r n_r (μ_1,r − μ_0,r)² / (μ_0,r(1 − μ_0,r)) and power
    Φ(√λ − z_{1−α}) (normal approximation of the Neyman-Pearson test). Regions covered in only
    one sample are left out (no profile to know).

    Why it is an upper bound and not a target: a real test knows only the atlas, not the donor's
    own methylation at each marker (donor-to-atlas deviation is what ``null_inflation`` and the
    over-dispersion ρ pay for), must test a tissue against every other type rather than one known
    alternative, and the calls of one read are correlated (fewer independent draws than calls).
    On all regions it bounds detecting *A's DNA* (including the blood and endothelium it carries
    in other proportions than B); on the marker regions of A's tissue (``regions``) it is closer
    to detecting *A's tissue*."""
    meth_a, total_a, meth_b, total_b = (np.asarray(x, dtype=np.float64) for x in (meth_a, total_a, meth_b, total_b))
    if not 0 <= fraction <= 1 or not 0 < false_call_rate < 0.5:
        raise ValueError(f"fraction {fraction} must be in [0, 1] and false_call_rate {false_call_rate} in (0, 0.5)")
    keep_a, keep_b = thinning(total_a, total_b, fraction)
    use = (total_a > 0) & (total_b > 0) & (True if regions is None else np.asarray(regions, dtype=bool))
    n_a, n_b = keep_a * total_a[use], keep_b * total_b[use]
    n = n_a + n_b
    mu_a = (meth_a[use] + 0.5) / (total_a[use] + 1.0)
    mu_0 = (meth_b[use] + 0.5) / (total_b[use] + 1.0)
    mu_1 = mu_0 + n_a / n * (mu_a - mu_0)
    lam = float(np.sum(n * (mu_1 - mu_0) ** 2 / (mu_0 * (1.0 - mu_0))))
    return lam, float(norm.cdf(np.sqrt(lam) - norm.ppf(1.0 - false_call_rate)))


def oracle_curves(samples, methylated, total, truth: pd.DataFrame, atlas: np.ndarray, cell_types, fractions=FRACTIONS,
                  false_call_rate: float = EVIDENCE_DEFAULTS["false_call_rate"], tissues: dict | None = None) -> pd.DataFrame:
    """:func:`oracle_power` for every ordered pair (A, B) of pure Roadmap samples of different
    tissues (as :func:`draw_pairs`) and fraction > 0: one row per (a, b, f) with ``power`` (all
    covered regions) and ``power_markers`` (the marker regions of A's tissue,
    ``read_evidence.marker_regions`` of ``atlas``, regions x types, aligned to ``methylated``)."""
    tissues = resolve_tissues(tissues, cell_types)
    markers = marker_regions(atlas)
    column = {str(c): i for i, c in enumerate(cell_types)}
    tissue_of = pure_tissues(truth)
    index = {s: samples.index(s) for s in tissue_of if s in samples}
    rows = []
    for a in index:
        own = markers[:, [column[t] for t in tissues[tissue_of[a]]]].any(axis=1)
        for b in index:
            if tissue_of[a] == tissue_of[b]:
                continue
            args = (methylated[index[a]], total[index[a]], methylated[index[b]], total[index[b]])
            for f in (f for f in fractions if f > 0):
                lam, power = oracle_power(*args, f, false_call_rate)
                lam_m, power_m = oracle_power(*args, f, false_call_rate, regions=own)
                rows.append({"a": a, "b": b, "fraction": f, "lambda": lam, "power": power,
                             "lambda_markers": lam_m, "power_markers": power_m})
    return pd.DataFrame(rows)


def own_shares(tissue_table: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Per pure Roadmap sample: its own tissue group's share in a model's ``tissues`` table."""
    return pd.Series({s: float(tissue_table.loc[s, t]) for s, t in pure_tissues(truth).items()}, name="own_share")


def load_models(models_dir, names) -> dict:
    out = {}
    for name in names:
        path = Path(models_dir) / name / "checkpoint_best.pt"
        if not path.is_file():
            raise DeconflowError(path, "model checkpoint does not exist", f"run `snakemake {path}` first (or leave {name} out of --real-models)")
        out[name] = load_model(path)
    return out


def run(methsets, models_dir, names=("nnls", "nnls_reads", "sparse"), draws: int = 10, seed: int = 0, settings: dict | None = None) -> dict:
    """Every table of the module docstring (printed by ``deconflow.benchmarks.methylation``)."""
    methsets = Path(methsets)
    models = load_models(models_dir, names)
    first = next(iter(models.values()))
    out = {}
    samples, methylated, total = read_counts(methsets / "uxm_roadmap_counts.tsv", first.feature_names)
    truth = pd.read_csv(methsets / "uxm_roadmap_truth.tsv", sep="\t", index_col=0)
    started = time.perf_counter()
    results = run_models(models, methylated, total, samples, settings)
    out["roadmap_seconds"] = {name: round(r[2], 2) for name, r in results.items() if name != "_detection"}
    out["roadmap_pure"], out["roadmap_r"] = roadmap_scores({n: r[1] for n, r in results.items() if n != "_detection"}, truth)
    out["roadmap_tissues"] = {n: r[1] for n, r in results.items() if n != "_detection"}
    c_samples, c_meth, c_total = read_counts(methsets / "celfie_wgbs_counts.tsv", first.feature_names)
    c_truth = pd.read_csv(methsets / "celfie_wgbs_truth.tsv", sep="\t", index_col=0)
    c_results = run_models(models, c_meth, c_total, c_samples, settings)
    out["celfie"] = celfie_scores({n: r[0] for n, r in c_results.items() if n != "_detection"}, c_truth)
    out["plasma"] = plasma_calls(c_results["_detection"], {n: r[1] for n, r in c_results.items() if n != "_detection"}, c_truth)
    started = time.perf_counter()
    out["curves"], out["per_source"] = low_fraction_curves(models, samples, methylated, total, truth, draws=draws, seed=seed,
                                                           settings=settings)
    out["curves_seconds"] = round(time.perf_counter() - started, 1)
    rate = evidence_settings({k: v for k, v in (settings or {}).items() if k != "tissues"})["false_call_rate"]
    out["oracle"] = oracle_curves(samples, methylated, total, truth, first.atlas_betas(), first.cell_types,
                                  false_call_rate=rate, tissues=(settings or {}).get("tissues"))
    tables = out["roadmap_tissues"]
    out["own_share"] = own_shares(tables.get("nnls", next(iter(tables.values()))), truth)
    return out
