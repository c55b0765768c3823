"""Apply a fitted model to real bulk samples (used by the Snakemake rule and the CLI)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .depth import COUNT_FORMATS, log_depth, sample_depth, values_are_counts
from .cell_content import checkpoint_cell_size, read_cell_mrna, to_bulk_cell_fractions
from .errors import DeconflowError
from .evaluation import features_for_model
from .io import read_bulk, read_mixtures, write_table
from .io.bulks import expand_bulk_paths, read_rna_bulk
from .io.genes import match_bulk_genes, overlap_fix, read_gene_table, strip_version
from .io.methylation_calls import FORMATS as METHYLATION_CALL_FORMATS, calls_format, read_methylation_samples
from .io.references import reference_gene_aliases
from .models import FittedModel, from_checkpoint, read_checkpoint
from .models.adaptation import adapt_settings
from .normalize import CPM_SCALE, LOG_SCALE_MAX, looks_log_scaled
from .other_cells import OTHER_CELLS_DEFAULTS, absolute_fractions, other_cells_table, read_other_cells
from .other_cells import default_path as default_other_cells_path
from .read_evidence import analyse_reads, evidence_settings, resolve_tissues, tissue_masks
from .threads import with_fixed_threads
from .trust import QC_DEFAULTS, default_calibration_path, parse_plausible, trust_tables

log = logging.getLogger(__name__)

CALL_FORMATS = set(METHYLATION_CALL_FORMATS)  # bismark, methyldackel, modkit, cytosine_report, region_counts


def align_bulk(bulk: pd.DataFrame, model: FittedModel, min_overlap: int, source=None) -> tuple[np.ndarray, int]:
    """Features matrix (samples x model features) for ``bulk`` (features x samples).

    Only features shared with the model are used; the others are NaN, for the model's
    ``predict_partial`` to handle. For CPM models the bulk is re-normalised to CPM over the shared
    genes (linear space; log-scaled input is refused). Beta values are used as they are.
    """
    shared = bulk.index.intersection(pd.Index(model.feature_names))
    n_shared = len(shared)
    if n_shared < min_overlap:
        check_not_transposed(bulk, model.feature_names, n_shared, source)
        lower = ", or lower `min_feature_overlap`" if n_shared >= 0.5 * min_overlap else ""
        raise DeconflowError(
            source,
            f"only {n_shared} of {len(model.feature_names)} model features (genes/regions) are in the bulk file; "
            f"at least {min_overlap} are required",
            f"use the same gene identifiers (or region ids) as the reference{lower}",
        )
    values = bulk.loc[shared].to_numpy(dtype=np.float64)
    if model.normalization == "cpm":
        check_non_negative(bulk.loc[shared], source)
        if looks_log_scaled(values):
            raise DeconflowError(
                source,
                "bulk values look log-scaled (negative, or max ≤ 50); mixtures are only linear in linear space",
                "give raw counts, TPM or CPM: undo the log transform with the base it was made with (np.expm1(x) for natural-log "
                "log1p, as scanpy writes; 2**x - 1 for log2(x+1)), or give the counts the file was made from",
            )
        totals = values.sum(axis=0)
        if np.any(totals <= 0):
            bad = bulk.columns[totals <= 0].tolist()
            raise DeconflowError(source, f"samples {bad} have no counts on the shared genes", "drop these samples")
        values = values / totals * CPM_SCALE
    elif model.normalization == "beta":
        if np.nanmin(values) < 0 or np.nanmax(values) > 1:
            raise DeconflowError(source, "methylation betas outside [0, 1]", "give beta values (methylated / total reads)")
    else:
        raise ValueError(f"unknown normalization {model.normalization!r}")
    position = pd.Index(model.feature_names).get_indexer(shared)
    out = np.full((bulk.shape[1], len(model.feature_names)), np.nan)
    out[:, position] = values.T
    return out, n_shared


def check_not_transposed(bulk: pd.DataFrame, feature_names, n_row_matches: int, source) -> None:
    """Refuse a table with samples in rows: (almost) no row id is a model feature, but many
    column names are."""
    features = set(map(str, feature_names))
    stripped = {strip_version(f) for f in features}
    in_columns = sum(1 for c in map(str, bulk.columns) if c in features or strip_version(c) in stripped)
    if in_columns >= 10 and in_columns > 10 * max(n_row_matches, 1):
        raise DeconflowError(source, f"the table looks transposed: {in_columns} model features are column names "
                                     f"(and {n_row_matches} are row ids; {bulk.shape[1]} columns, {bulk.shape[0]} rows)",
                             "put genes (features) in rows and samples in columns: transpose the table")


def check_non_negative(bulk: pd.DataFrame, source) -> None:
    """Linear expression with negative entries (batch-corrected or centred values) is no mixture:
    refuse it with the count, the minimum and the first gene and sample. Log-scaled data (max ≤ 50)
    is left to the log-scale check."""
    values = bulk.to_numpy(dtype=np.float64)
    if values.size == 0 or np.nanmin(values) >= 0 or np.nanmax(values) <= LOG_SCALE_MAX:
        return
    negative = values < 0
    row, column = (int(i[0]) for i in np.nonzero(negative))
    raise DeconflowError(
        source,
        f"{int(negative.sum())} negative values (min {np.nanmin(values):.4g}, first at gene {bulk.index[row]}, sample "
        f"{bulk.columns[column]}); deconvolution needs non-negative linear expression",
        "give uncorrected counts, TPM or CPM (batch-corrected or centred values are not mixtures of cell types)",
    )


def align_reads(methylated: pd.DataFrame, total: pd.DataFrame, model: FittedModel, paths) -> tuple[np.ndarray, np.ndarray]:
    """(fractions with NaN where no call, coverage), samples x model regions. A sample without a
    call on any atlas region is refused (wrong build or not this atlas's regions); how many
    regions are enough is decided per cell type by ``deconflow.read_evidence``."""
    covered = (total.to_numpy() > 0).sum(axis=0)
    for sample, n_covered, path in zip(total.columns, covered, paths):
        log.info("%s: calls on %d of %d atlas regions (%d calls)", path, n_covered, len(model.feature_names), int(total[sample].sum()))
        if n_covered == 0:
            raise DeconflowError(path, f"no CpG call of sample {sample} falls in any of the {len(model.feature_names)} atlas regions",
                                 "check the genome build (embedded atlas: hg38; lift hg19 calls over) and that the file holds this sample's calls")
    counts = total.to_numpy(dtype=np.float64).T
    with np.errstate(invalid="ignore", divide="ignore"):
        fractions = np.where(counts > 0, methylated.to_numpy(dtype=np.float64).T / np.maximum(counts, 1), np.nan)
    return fractions, counts


def methylation_read_tables(model: FittedModel, features: np.ndarray, coverage: np.ndarray, sample_ids, paths,
                            settings: dict | None = None, analysis: dict | None = None) -> tuple[np.ndarray, dict[str, pd.DataFrame], dict[str, np.ndarray]]:
    """Proportions (samples x types, NaN = no evidence) of methylation samples with reads, and
    the tables written beside them: ``tissues`` (samples x tissues) and ``detection`` (per
    sample, cell type and tissue: estimate, interval, test statistic, threshold, detected,
    evidence, marker regions and calls; ``deconflow.read_evidence``). A sample whose covered
    regions are no marker of any atlas type is refused with the reason. ``analysis``: the
    :func:`deconflow.read_evidence.analyse_reads` result of the same samples and settings, when
    several models share it (benchmarks)."""
    settings = dict(settings or {})
    tissues = resolve_tissues(settings.pop("tissues", None), model.cell_types)
    settings = evidence_settings(settings)
    if analysis is None:
        analysis = analyse_reads(model.atlas_betas(), model.cell_types, features, coverage, tissues, settings)
    evidence = analysis["evidence"]["evidence"]
    for i, path in enumerate(paths):
        if not evidence[i].any():
            n_covered = int((coverage[i] > 0).sum())
            raise DeconflowError(path, f"calls on {n_covered} atlas regions, but none with ≥ {settings['min_region_reads']} calls is a "
                                       "marker region of any atlas cell type, so the sample cannot speak about any of them",
                                 "use a panel or sequencing that covers the atlas's marker regions (or lower methylation_evidence.min_region_reads)")
    proportions = model.predict_reads(features, coverage, evidence, analysis["supported"])
    sample_ids = np.asarray(sample_ids).astype(str)
    tissue_table = tissue_shares(proportions, model.cell_types, tissues, sample_ids, evidence)
    detection = analysis["detection"].copy()
    detection.insert(0, "sample_id", sample_ids[detection.pop("sample").to_numpy()])
    no_evidence = [";".join(np.asarray(model.cell_types)[~row]) for row in evidence]
    tissue_rows = detection[detection["level"] == "tissue"]
    detected = [";".join(tissue_rows.loc[(tissue_rows["sample_id"] == s) & tissue_rows["detected"], "name"]) for s in sample_ids]
    qc_columns = {"covered_regions": (coverage > 0).sum(axis=1), "calls": coverage.sum(axis=1).astype(np.int64),
                  "types_with_evidence": evidence.sum(axis=1), "no_evidence_types": no_evidence,
                  "detected_tissues": detected, "overdispersion": analysis["rho"]}
    return proportions, {"tissues": tissue_table.reset_index(), "detection": detection}, qc_columns


#: columns of ``detection.csv`` (``deconflow.read_evidence.analyse_reads``'s table with sample ids)
DETECTION_COLUMNS = ["sample_id", "level", "name", "estimate", "lower", "upper", "statistic", "df", "threshold", "evidence",
                     "regions", "reads", "detected"]


def tissue_shares(proportions: np.ndarray, cell_types, tissues: dict, sample_ids, evidence: np.ndarray | None = None) -> pd.DataFrame:
    """Samples x tissues: the proportions (samples x types, NaN = no evidence) summed over each
    tissue's types (``tissues``: ``{tissue: [types]}``); NaN where no type of the tissue has
    evidence (``evidence``: samples x types bool; default: the types with a finite proportion)."""
    proportions = np.atleast_2d(np.asarray(proportions, dtype=np.float64))
    evidence = np.isfinite(proportions) if evidence is None else np.asarray(evidence, dtype=bool)
    masks = tissue_masks(cell_types, tissues)
    return pd.DataFrame(
        {name: np.where(evidence[:, mask].any(axis=1), np.nansum(np.where(mask, proportions, 0.0), axis=1), np.nan)
         for name, mask in masks.items()}, index=pd.Index(np.asarray(sample_ids).astype(str), name="sample_id"))


def betas_table_tables(model: FittedModel, proportions: np.ndarray, sample_ids, settings: dict | None, source) -> dict[str, pd.DataFrame]:
    """``tissues`` and ``detection`` of a methylation betas table (no read counts): the tissue
    shares of the proportions and a detection table without rows (the read test needs calls), so
    every methylation deconvolution writes the same files (rule ``deconvolve_bulk_methylation``)."""
    tissues = resolve_tissues(dict(settings or {}).get("tissues"), model.cell_types)
    log.info("%s: a betas table has no read counts, so detection.csv has no rows (the detection test needs "
             "methylation calls: Bismark .cov, MethylDackel bedGraph, ...)", source)
    return {"tissues": tissue_shares(proportions, model.cell_types, tissues, sample_ids).reset_index(),
            "detection": pd.DataFrame(columns=DETECTION_COLUMNS)}


def _source_name(bulk_path) -> str:
    if isinstance(bulk_path, (str, Path)):
        return str(bulk_path)
    paths = [str(p) for p in bulk_path]
    return paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"


def read_rna_bulk_for_model(bulk_path, model: FittedModel, min_overlap: int, bulk_format=None, quantity: str = "counts",
                            gene_table=None, reference=None, gene_column=None, counts_layer=None, tx2gene=None, strand=None) -> pd.DataFrame:
    """A bulk RNA file of any accepted format, its genes matched to the model's (deconflow.io.genes),
    re-indexed by model feature names; too few matches is an error naming both identifier types."""
    bulk, fmt = read_rna_bulk(bulk_path, bulk_format, quantity, tx2gene, strand=strand)
    source = _source_name(expand_bulk_paths(bulk_path))
    check_non_negative(bulk, source)
    aliases = reference_gene_aliases(reference, gene_column, counts_layer) if reference else None
    table = read_gene_table(gene_table) if gene_table else None
    own = bulk.attrs.get("gene_names")  # a file's own second identifier (nf-core's gene_name)
    matched, match = match_bulk_genes(bulk, model.feature_names, aliases, table, own)
    for line in match.log_lines(source):
        log.info("%s", line)
    if match.n_matched < min_overlap:
        check_not_transposed(bulk, model.feature_names, match.n_matched, source)
        raise DeconflowError(
            source,
            f"only {match.n_matched} of {match.n_model_features} model features (genes) are in the bulk file "
            f"({match.describe_sides()}); at least {min_overlap} are required",
            overlap_fix(match, min_overlap, bulk.index, model.feature_names),
        )
    # read counts (for the depth of deconflow.depth): a count format, or a table of integers
    matched.attrs["counts"] = fmt in COUNT_FORMATS or (fmt in ("salmon", "kallisto", "rsem") and quantity == "counts") \
        or values_are_counts(bulk.to_numpy(dtype=np.float64))
    return matched


@with_fixed_threads
def deconvolve_file(model_path, bulk_path, out_path, min_overlap: int = 1000, bulk_format: str | None = None,
                    cell_mrna=None, intervals: float | None = None, qc: bool = False, calibration=None,
                    plausible_fractions: dict | None = None, min_overlap_fraction: float = QC_DEFAULTS["min_overlap_fraction"],
                    min_reads: float = QC_DEFAULTS["min_reads"], min_nonzero_fraction: float = QC_DEFAULTS["min_nonzero_fraction"],
                    other_cells=None, absolute: bool = OTHER_CELLS_DEFAULTS["absolute_fractions"],
                    methylation_evidence: dict | None = None, adapt: dict | bool | None = None, mixtures=None,
                    overwrite: bool = True, **rna_settings) -> pd.DataFrame:
    """Model checkpoint + bulk file(s) -> proportions CSV (samples x cell types).

    ``overwrite`` False (the CLI without ``--overwrite``): when ``out_path`` or a table it would
    write beside it (intervals.csv, qc.csv, tissues.csv, detection.csv) already exists, one error
    naming them and nothing written (checked after the computation, before the first write).

    RNA models: ``bulk_path`` is a path, glob, folder or list in any format of
    ``deconflow.io.bulks``; ``rna_settings`` are the other keyword arguments of
    :func:`read_rna_bulk_for_model` (``quantity``, ``gene_table``, ``reference``, ``gene_column``,
    ``counts_layer``, ``tx2gene``, ``strand``). Methylation models: one regions x samples betas table, or one
    or more per-sample Bismark / MethylDackel call files (paths, globs or a list), aggregated into
    the atlas regions with their read counts. ``bulk_format`` overrides detection in both.
    ``cell_mrna`` (RNA only): a table of the bulk's mRNA content per cell of each type; the
    model's reference-calibrated cell fractions are converted to it (``deconflow.cell_content``).
    RNA models: ``other_cells`` is the other-cells calibration (``deconflow.other_cells``; default
    ``other_cells.json`` in the models' folder): with ``qc`` the quality rows get the fraction of
    cells of no reference type and its interval (skipped with a warning when the default file does
    not exist); ``absolute`` writes absolute fractions instead (reference types x (1 - other
    cells), and an ``other cells`` column; intervals and qc stay on the reference's types).
    Methylation call files need no fixed number of covered regions (``min_overlap`` is for RNA
    and betas tables): each cell type is fitted when the sample covers its markers, the others
    are NaN; ``methylation_evidence`` (config section of that name, with ``tissues``) sets the
    rule and the detection test, and ``tissues.csv`` / ``detection.csv`` are written beside
    the proportions (``methylation_read_tables``); for a betas table too (tissue shares of the
    proportions; detection.csv without rows: the test needs read counts).
    ``adapt`` (RNA models with an adaptation step, HP-VADE): settings of
    ``deconflow.models.adaptation.ADAPT_DEFAULTS`` (True / None: the defaults, on; False: off);
    ``mixtures``: the model's training mixtures (``pseudobulk/train.h5``) it is adapted with. The
    bulk's truth is never read here.
    Runs on ``deconflow.threads.NUMERICAL_THREADS`` threads: the same bytes on any machine.
    """
    checkpoint = read_checkpoint(model_path)
    model = from_checkpoint(checkpoint)
    bulk_format = None if bulk_format == "auto" else bulk_format
    if absolute and model.normalization != "cpm":
        raise DeconflowError(model_path, "absolute fractions (other cells) are for RNA models, but the model takes "
                                         f"{model.normalization}", "remove --absolute / `other_cells.absolute_fractions`")
    if cell_mrna and model.normalization != "cpm":
        raise DeconflowError(cell_mrna, f"`cell_mrna` is for RNA bulks, but the model takes {model.normalization}",
                             "remove `cell_mrna` (methylation fractions are of DNA, one copy per cell)")
    content = read_cell_mrna(cell_mrna, model.cell_types) if cell_mrna else None
    reference_size = checkpoint_cell_size(checkpoint, model_path) if cell_mrna else None
    if model.normalization == "cpm":
        paths = expand_bulk_paths(bulk_path)
        calls = sorted({f for f in (calls_format(p, bulk_format) for p in paths if Path(p).is_file()) if f in CALL_FORMATS})
        if calls:
            raise DeconflowError(paths[0], f"methylation calls ({', '.join(calls)}) given to a {model.normalization} model",
                                 "deconvolve methylation calls with a model of a `modality: methylation` dataset")
        bulk = read_rna_bulk_for_model(bulk_path, model, min_overlap, bulk_format=bulk_format, **rna_settings)
        source = _source_name(paths)
        depth_settings = {"min_reads": min_reads, "min_nonzero_fraction": min_nonzero_fraction}
        depth = sample_depth(bulk, model, bulk.attrs.get("counts"))
        log_depth(depth, len(model.used_features()), source, depth_settings)
    else:
        paths = expand_bulk_paths(bulk_path)
        if {calls_format(path, bulk_format) for path in paths} != {None}:  # calls, aggregated into the atlas regions
            methylated, total = read_methylation_samples(paths, model.feature_names, bulk_format, regions_source=model_path)
            features, coverage = align_reads(methylated, total, model, paths)
            proportions, read_tables, qc_columns = methylation_read_tables(model, features, coverage, total.columns, paths,
                                                                           methylation_evidence)
            table = pd.DataFrame(proportions, index=pd.Index(total.columns, name="sample_id"), columns=model.cell_types)
            extra = trust_tables(model, features, table.index, proportions, level=intervals, qc=qc,
                                 calibration_path=calibration or default_calibration_path(model_path),
                                 plausible=parse_plausible(plausible_fractions, model.cell_types, "plausible_fractions"),
                                 min_overlap_fraction=0.0, depth_settings={"min_reads": 0, "min_nonzero_fraction": 0},
                                 depth=pd.DataFrame({"reads": coverage.sum(axis=1),  # reads on the atlas regions (no minimum)
                                                     "nonzero_features": (coverage[:, model.used_features()] > 0).sum(axis=1)}))
            # panels cover a few % of the atlas: evidence columns instead of the overlap share
            if "qc" in extra:
                extra["qc"] = extra["qc"].assign(**qc_columns)
            _write_all(table, {**extra, **read_tables}, out_path, overwrite)
            return table
        if len(paths) > 1:
            raise DeconflowError(paths[1], f"{len(paths)} bulk files given, but they are not per-sample methylation calls",
                                 "give one regions x samples table, or Bismark .cov(.gz) / MethylDackel .bedGraph files (or set `format`)")
        source = paths[0]
        bulk = read_bulk(source, allow_missing=True)
    features, n_shared = align_bulk(bulk, model, min_overlap, source=source)
    log.info("%d of %d model features matched in %s (%d samples)", n_shared, len(model.feature_names), source, bulk.shape[1])
    plausible = parse_plausible(plausible_fractions, model.cell_types, "plausible_fractions")
    model, _ = adapt_to_cohort(model, features, adapt, mixtures)
    proportions = model.predict_partial(features)
    convert = None
    if content is not None:
        def convert(p):
            return to_bulk_cell_fractions(p, reference_size, content)

        proportions = convert(proportions)
        listed = ", ".join(f"{t} {c:g}" for t, c in zip(model.cell_types, content) if np.isfinite(c))
        log.info("cell fractions converted to the bulk's mRNA per cell from %s (%s; other types keep the reference's size)",
                 cell_mrna, listed)
    table = pd.DataFrame(proportions, index=pd.Index(bulk.columns, name="sample_id"), columns=model.cell_types)
    other = _other_cells(model, model_path, features, other_cells, qc, absolute, intervals)
    extra = trust_tables(model, features, table.index, proportions, level=intervals, qc=qc, convert=convert,
                         calibration_path=calibration or default_calibration_path(model_path),
                         cell_mrna_applied=content is not None, plausible=plausible, min_overlap_fraction=min_overlap_fraction,
                         **({"depth": depth, "depth_settings": depth_settings} if model.normalization == "cpm" else {}),
                         other_cells=other)
    if model.normalization != "cpm":  # a methylation betas table: the same files as calls
        extra.update(betas_table_tables(model, proportions, table.index, methylation_evidence, source))
    if absolute:
        table = absolute_fractions(table, other["other_cells"].to_numpy())
    _write_all(table, extra, out_path, overwrite)
    return table


def _other_cells(model: FittedModel, model_path, features: np.ndarray, path, qc: bool, absolute: bool,
                 level: float | None) -> pd.DataFrame | None:
    """The other-cells rows of an RNA bulk (``deconflow.other_cells``) when qc rows or absolute
    fractions are asked for; None when only qc rows are, and the default file is absent."""
    if not (qc or absolute):
        return None
    explicit = path is not None
    path = Path(path) if explicit else default_other_cells_path(model_path)
    if not explicit and not absolute and not path.is_file():
        log.warning("no other-cells calibration at %s: qc.csv has no other_cells columns "
                    "(run `snakemake results/<dataset>/models/other_cells.json` or pass --other-cells)", path)
        return None
    calibration = read_other_cells(path, model.cell_types)
    return other_cells_table(calibration, features, model.feature_names, level if level is not None else 0.9)


def adapt_to_cohort(model: FittedModel, features: np.ndarray, adapt: dict | bool | None, mixtures) -> tuple[FittedModel, str]:
    """(model to answer with, adaptation kind) for the aligned bulk ``features`` (samples x model
    features): ``FittedModel.adapted`` with the training mixtures read from ``mixtures`` (a path)
    when the model has an adaptation step and ``adapt`` is on; ``(model, "none")`` otherwise."""
    settings = adapt_settings(adapt if isinstance(adapt, dict) else {"enabled": adapt is not False})
    if not settings["enabled"] or not getattr(model, "adapts", False):
        return model, "none"
    if mixtures is None:
        raise DeconflowError(None, f"adapting {model.name} to the bulk needs the training mixtures it was trained on",
                             "pass --mixtures results/<dataset>/pseudobulk/train.h5, or --no-adapt")
    train = read_mixtures(mixtures, expect_normalization=model.normalization)
    try:
        train_x = features_for_model(train, model)
    except ValueError as exc:
        raise DeconflowError(mixtures, f"these mixtures were not made for this model ({exc})",
                             "pass the train.h5 of the run that trained the checkpoint (results/<dataset>/pseudobulk/train.h5)") from None
    model, kind, note = model.adapted(features, (train_x, train.proportions), settings)
    log.info("%s", note)
    return model, kind


def _write_all(table: pd.DataFrame, extra: dict, out_path, overwrite: bool = True) -> None:
    """The proportions, then ``intervals.csv`` / ``qc.csv`` in the same folder (all computed first);
    without ``overwrite`` nothing is written when any of those files exists."""
    planned = [Path(out_path)] + [Path(out_path).with_name(f"{name}.csv") for name in extra]
    existing = [str(p) for p in planned if p.exists()]
    if existing and not overwrite:
        raise DeconflowError(existing[0], f"output already exists ({', '.join(existing)}); nothing was written",
                             "choose another --out (its folder also receives " + ", ".join(p.name for p in planned[1:]) +
                             ") or pass --overwrite to replace them" if len(planned) > 1 else
                             "choose another --out, or pass --overwrite to replace it")
    write_table(table, planned[0])
    for path, frame in zip(planned[1:], extra.values()):
        write_table(frame, path, index=False)
        log.info("wrote %s", path)
