"""Bad input stops the workflow with one readable line: the file, the problem and the fix.

One table of cases. Each case writes its own bad file (derived from the embedded PBMC data or
the Loyfer atlas) and its own config under ``cases/<id>/`` of one shared project copy, runs
snakemake on the smallest target that reaches the failing reader, and asserts:

- the exit status is non-zero, and only the failing rule was scheduled;
- the rule's log holds the error as one line ``<file>: <problem>. Fix: <fix>`` (no traceback),
  and snakemake's own output repeats it;
- no output of the failing rule exists and nothing new (no temporary ``.<name>.*.tmp`` file
  of ``io.atomic_path``, no partial file) appeared under results/;
- the bad input file's bytes and mtime are unchanged.

Config problems (schema violations, unknown model names) fail while the Snakefile is parsed: the
message names the config file, the offending key and the fix, and no job runs.

Bulk cases reuse one fitted NNLS model per modality, made once per module by the fixture; truth
cases (measured fractions of a real bulk) reuse its deconvolution of the good bulk, so only
``evaluate_bulk`` runs.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from own_data import write_10x_h5, write_10x_mtx, write_featurecounts
from wfutil import project_copy, scheduled_jobs, snakemake

pytestmark = pytest.mark.workflow

RNA = "rna"  # dataset with a fitted NNLS model: the bulk cases deconvolve with it
METHYLATION = "cfdna"  # methylation dataset with a fitted NNLS model
MIN_FEATURE_OVERLAP = 200
N_GENES = 600  # genes of the small reference (all shared with the bulk file)
CELL_TYPES = ["B cells", "Monocytes", "NK cells", "T cells CD8"]
CELLS_PER_TYPE = 40
ATLAS = "resources/loyfer2023/atlas.tsv"
MEASURED_BULK = "measured"  # the RNA dataset's good bulk, whose truth the truth cases replace
TRUTH_GROUPS = {"B": ["B cells"], "myeloid": ["Monocytes"], "NK": ["NK cells"], "CD8": ["T cells CD8"]}

BASE_CONFIG = {
    "seed": 3,
    "models": ["nnls"],
    "datasets": {
        RNA: {"modality": "rna", "reference": "inputs/reference.h5ad", "bulk": {MEASURED_BULK: {"path": "inputs/bulk.tsv"}}},
        METHYLATION: {"modality": "methylation", "atlas": ATLAS},
    },
    "pseudobulk": {"n_train": 8, "n_val": 4, "n_test": 4, "cells_per_mixture": 20},
    "deconvolution": {"min_feature_overlap": MIN_FEATURE_OVERLAP},
}


@dataclass
class GoodData:
    """The valid inputs every bad one is derived from."""

    reference: ad.AnnData  # cells x genes, int32 CSR counts, obs cell_type
    bulk: pd.DataFrame  # genes x samples, linear TPM-like values
    atlas: pd.DataFrame  # regions x cell types, betas
    methylation_bulk: pd.DataFrame  # regions x samples, betas
    truth: pd.DataFrame  # samples of `bulk` x groups of TRUTH_GROUPS, measured fractions


@dataclass
class Project:
    work: Path
    good: GoodData


# --------------------------------------------------------------------------- the shared project
def _small_reference(path: Path, genes_in_bulk: pd.Index) -> ad.AnnData:
    full = ad.read_h5ad(path)
    rng = np.random.default_rng(0)
    cells = np.concatenate(
        [rng.choice(np.flatnonzero(full.obs["cell_type"] == t), CELLS_PER_TYPE, replace=False) for t in CELL_TYPES]
    )
    shared = np.flatnonzero(full.var_names.isin(genes_in_bulk))
    totals = np.asarray(full.X[cells][:, shared].sum(axis=0)).ravel()
    genes = np.sort(shared[np.argsort(-totals, kind="stable")[:N_GENES]])
    small = full[np.sort(cells)][:, genes].copy()
    small.obs["cell_type"] = small.obs["cell_type"].astype(str).astype("category")
    small.X = sp.csr_matrix(small.X, dtype=np.int32)
    return small


@pytest.fixture(scope="module")
def project(tmp_path_factory, embedded_resources) -> Project:
    """One project copy with small valid inputs and NNLS fitted on them (RNA and methylation)."""
    work = project_copy(tmp_path_factory.mktemp("bad-input"), embedded_resources)
    full_bulk = pd.read_csv(work / "resources/pbmc/bulk.tsv", sep="\t", index_col=0)
    reference = _small_reference(work / "resources/pbmc/reference.h5ad", full_bulk.index)
    bulk = full_bulk.loc[reference.var_names].iloc[:, :3]
    assert bulk.to_numpy().max() > 50  # linear scale (the log-scale check must not fire on it)
    atlas = pd.read_csv(work / ATLAS, sep="\t", index_col=0)
    methylation_bulk = pd.DataFrame(
        {"plasma_1": atlas.iloc[:, :6].mean(axis=1), "plasma_2": atlas.iloc[:, 3:9].mean(axis=1)}
    ).iloc[:1000]
    truth = pd.DataFrame(
        [[0.10, 0.25, 0.10, 0.20], [0.05, 0.30, 0.15, 0.15], [0.12, 0.20, 0.08, 0.25]], index=bulk.columns, columns=list(TRUTH_GROUPS)
    )
    (work / "inputs").mkdir()
    reference.write_h5ad(work / "inputs/reference.h5ad")
    write_10x_h5(reference.X, reference.obs_names, _ensembl_ids(reference), reference.var_names, work / "inputs/10x.h5")
    reference.obs[["cell_type"]].rename_axis("barcode").to_csv(work / "inputs/labels.tsv", sep="\t")
    bulk.to_csv(work / "inputs/bulk.tsv", sep="\t")
    _write_yaml(work / "inputs/base.yaml", BASE_CONFIG)
    models = [f"results/{ds}/models/nnls/checkpoint_best.pt" for ds in (RNA, METHYLATION)]
    models.append(f"results/{METHYLATION}/models/nnls/calibration.json")  # its qc rows' residual check
    snakemake(work, *models, f"results/{RNA}/deconvolution/{MEASURED_BULK}/nnls/proportions.csv", "--configfile", "inputs/base.yaml")
    return Project(work, GoodData(reference, bulk, atlas, methylation_bulk, truth))


def _ensembl_ids(adata: ad.AnnData) -> list[str]:
    """Well-formed (made-up) versioned Ensembl IDs for the 10x files' features."""
    return [f"ENSG9{i:010d}.1" for i in range(adata.n_vars)]


def _write_yaml(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# --------------------------------------------------------------------------- bad inputs
# A writer makes one bad file from the good data: writer(good, path).
Writer = Callable[[GoodData, Path], None]


def _write_h5ad(adata: ad.AnnData, path: Path) -> None:
    with warnings.catch_warnings():  # anndata warns about the duplicate names written on purpose
        warnings.simplefilter("ignore")
        adata.write_h5ad(path)


def _truncate(path: Path, keep: float) -> None:
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])


def reference(change: Callable[[ad.AnnData], ad.AnnData | None]) -> Writer:
    """The good reference changed in place (or replaced) by ``change``."""

    def write(good: GoodData, path: Path) -> None:
        adata = good.reference.copy()
        _write_h5ad(change(adata) or adata, path)

    return write


def _negative_count(adata):
    adata.X.data[3] = -2


def _log_normalised(adata):  # what .X holds after scanpy's normalize_total + log1p
    adata.X = adata.X.astype(np.float32)
    adata.X.data = np.log1p(adata.X.data)


def _nan_count(adata):
    adata.X = adata.X.astype(np.float32)
    adata.X.data[7] = np.nan


def _duplicate_gene(adata):
    adata.var_names = [adata.var_names[0]] * 2 + adata.var_names[2:].tolist()


def _duplicate_cell(adata):
    adata.obs_names = [adata.obs_names[0]] * 2 + adata.obs_names[2:].tolist()


def _ten_nk_cells(adata):
    nk = np.flatnonzero(adata.obs["cell_type"] == "NK cells")
    return adata[np.setdiff1d(np.arange(adata.n_obs), nk[10:])].copy()


def truncated_reference(good: GoodData, path: Path) -> None:
    _write_h5ad(good.reference, path)
    _truncate(path, 0.5)


def table_as_h5ad(good: GoodData, path: Path) -> None:  # a TSV saved under an .h5ad name
    good.bulk.to_csv(path, sep="\t")


def bulk(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Writer:
    """The good bulk TSV with ``change`` applied."""

    def write(good: GoodData, path: Path) -> None:
        change(good.bulk.astype(np.float64)).to_csv(path, sep="\t", na_rep="NaN")

    return write


def _values(*cells: tuple[int, int, float]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Set (row, column, value) cells."""

    def change(df):
        for row, column, value in cells:
            df.iloc[row, column] = value
        return df

    return change


def _duplicate_gene_row(df):
    return df.set_axis([df.index[0], df.index[0], *df.index[2:]])


def _duplicate_sample_column(df):
    return df.set_axis([df.columns[0], df.columns[0], *df.columns[2:]], axis=1)


def _description_column(df):
    df.insert(0, "description", "protein coding")
    return df


def truncated_bulk_h5ad(good: GoodData, path: Path) -> None:
    ad.AnnData(good.bulk.T.astype(np.float32)).write_h5ad(path)
    _truncate(path, 0.3)


def truncated_mtx(good: GoodData, path: Path) -> None:  # a 10x matrix folder whose matrix.mtx.gz is cut short
    write_10x_mtx(good.reference.X, good.reference.obs_names, _ensembl_ids(good.reference), good.reference.var_names, path)
    _truncate(path / "matrix.mtx.gz", 0.5)


def labels_without_label_column(good: GoodData, path: Path) -> None:
    good.reference.obs.assign(celltype_fine=good.reference.obs["cell_type"]).drop(columns="cell_type").rename_axis(
        "barcode").to_csv(path, sep="\t")


def featurecounts_without_count_columns(good: GoodData, path: Path) -> None:
    write_featurecounts(good.bulk.iloc[:, :0], path)


def truth(change: Callable[[pd.DataFrame], pd.DataFrame] = lambda df: df) -> Writer:
    """The good truth TSV (samples x groups) with ``change`` applied."""

    def write(good: GoodData, path: Path) -> None:
        change(good.truth.copy()).rename_axis("sample_id").to_csv(path, sep="\t", na_rep="NaN")

    return write


def text(content: str) -> Writer:
    return lambda good, path: path.write_text(content)


def percent(table: str) -> Writer:
    """``good.<table>`` (betas) written as percentages."""
    return lambda good, path: (getattr(good, table) * 100).to_csv(path, sep="\t", float_format="%.4g")


def methylation_calls(fmt: str, change: Callable[[str], str] = lambda text: text) -> Writer:
    """Reads on the first 400 atlas regions as a Bismark .cov(.gz) / MethylDackel bedGraph file,
    its text changed by ``change``."""

    def write(good: GoodData, path: Path) -> None:
        from deconflow.io.methylation_calls import calls_from_region_counts, parse_region_ids, write_calls

        regions = parse_region_ids(good.atlas.index[:400])
        rng = np.random.default_rng(1)
        total = rng.integers(1, 12, len(regions))
        chrom, position, methylated, reads = calls_from_region_counts(regions, rng.binomial(total, 0.6), total, rng)
        plain = path.with_name(path.name.removesuffix(".gz") + ".plain")
        write_calls(plain, chrom, position, methylated, reads, fmt)
        text = change(plain.read_text())
        plain.unlink()
        if path.name.endswith(".gz"):
            import gzip

            path.write_bytes(gzip.compress(text.encode(), mtime=0))
        else:
            path.write_text(text)

    return write


def _first_call_percent(percent: str) -> Callable[[str], str]:
    def change(text: str) -> str:
        lines = text.splitlines(keepends=True)
        fields = lines[0].split("\t")
        fields[3] = percent
        lines[0] = "\t".join(fields)
        return "".join(lines)

    return change


def _ensembl_chromosomes(text: str) -> str:  # "1" instead of "chr1"
    return "".join(line[3:] if line.startswith("chr") else line for line in text.splitlines(keepends=True))


def _counts_dropped(text: str) -> str:  # a bedGraph of percentages only (bismark2bedGraph's .bedGraph)
    return "".join("\t".join(line.split("\t")[:4]) + "\n" if not line.startswith("track") else line for line in text.splitlines())


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    """One bad input: ``stage`` says which dataset it is given to and which rule must refuse it."""

    id: str
    stage: str  # "split" (reference), "deconvolve" (RNA bulk), "deconvolve_methylation", "atlas", "truth"
    file_name: str
    write: Writer
    expect: tuple[str, ...]  # phrases of the problem and of the fix
    dataset: dict = field(default_factory=dict)  # extra keys of the dataset's config
    config: dict = field(default_factory=dict)  # extra top-level config sections


# fmt: off
CASES = [
    # single-cell reference (rule split_reference reads it first)
    Case("reference-negative-counts", "split", "reference.h5ad", reference(_negative_count),
         ("negative values in the counts matrix", "raw UMI/read counts")),
    Case("reference-log-normalised", "split", "reference.h5ad", reference(_log_normalised),
         ("non-integer values in the counts matrix", "set `counts_layer`")),
    Case("reference-nan", "split", "reference.h5ad", reference(_nan_count),
         ("1 NaN/inf values in the counts matrix", "remove or impute")),
    Case("reference-duplicate-genes", "split", "reference.h5ad", reference(_duplicate_gene),
         ("duplicate gene names", "var_names_make_unique")),
    Case("reference-duplicate-cells", "split", "reference.h5ad", reference(_duplicate_cell),
         ("duplicate cell ids", "obs_names_make_unique")),
    Case("reference-rare-cell-type", "split", "reference.h5ad", reference(_ten_nk_cells),
         ("fewer than 15 cells", "'NK cells': 10", "lower `split.min_cells_per_split`"),
         config={"split": {"min_cells_per_split": 5}}),
    Case("reference-missing-label-column", "split", "reference.h5ad", reference(lambda adata: None),
         ("label column 'celltype' not found", "set `label_key`"), dataset={"label_key": "celltype"}),
    Case("reference-truncated-h5ad", "split", "reference.h5ad", truncated_reference,
         ("cannot be read as h5ad", "truncated file", "truncated or corrupt")),
    Case("reference-not-hdf5", "split", "reference.h5ad", table_as_h5ad,
         ("cannot be read as h5ad", "re-export")),
    # bulk RNA (rule deconvolve_bulk, with the NNLS model fitted by the fixture)
    Case("bulk-log-scaled", "deconvolve", "bulk.tsv", bulk(lambda df: np.log2(df + 1)),
         ("look log-scaled", "undo the log transform")),
    Case("bulk-negative", "deconvolve", "bulk.tsv", bulk(_values((4, 1, -3.0))),
         ("1 negative values (min -3, first at gene", "give uncorrected counts, TPM or CPM")),
    Case("bulk-nan-and-inf", "deconvolve", "bulk.tsv", bulk(_values((2, 0, np.nan), (5, 2, np.inf))),
         ("2 NaN/inf values in the bulk matrix", "remove or impute")),
    Case("bulk-duplicate-genes", "deconvolve", "bulk.tsv", bulk(_duplicate_gene_row),
         ("duplicate feature (gene/region) ids", "sum or drop duplicated rows")),
    Case("bulk-duplicate-samples", "deconvolve", "bulk.tsv", bulk(_duplicate_sample_column),
         ("duplicate sample ids", "unique name")),
    Case("bulk-no-gene-overlap", "deconvolve", "bulk.tsv",
         bulk(lambda df: df.set_axis([f"ENSG{i:011d}" for i in range(len(df))])),
         (f"only 0 of {N_GENES} model features", "same gene identifiers")),
    Case("bulk-overlap-below-minimum", "deconvolve", "bulk.tsv", bulk(lambda df: df.iloc[:150]),
         (f"only 150 of {N_GENES} model features", f"at least {MIN_FEATURE_OVERLAP} are required",
          "lower `min_feature_overlap`")),
    Case("bulk-empty-file", "deconvolve", "bulk.tsv", text(""),
         ("bulk file is empty", "features x samples table with a header row")),
    Case("bulk-header-only", "deconvolve", "bulk.tsv", text("gene\tpbmc_1\tpbmc_2\n"),
         ("no data rows", "features x samples table with a header row")),
    Case("bulk-non-numeric-column", "deconvolve", "bulk.tsv", bulk(_description_column),
         ("non-numeric sample columns ['description']", "numeric values in the others")),
    Case("bulk-truncated-h5ad", "deconvolve", "bulk.h5ad", truncated_bulk_h5ad,
         ("cannot be read as h5ad", "truncated file", "truncated or corrupt; re-export it")),
    # bring your own data: 10x references with a label table, featureCounts bulks
    Case("reference-10x-truncated-mtx", "split", "filtered_feature_bc_matrix", truncated_mtx,
         ("cannot be read as a 10x matrix folder", "truncated or corrupt")),
    Case("reference-labels-without-label-column", "split", "labels.tsv", labels_without_label_column,
         ("label column 'cell_type' not found in the label table", "set `label_key`"),
         dataset={"reference": "inputs/10x.h5", "labels": "cases/reference-labels-without-label-column/labels.tsv"}),
    Case("bulk-featurecounts-no-count-columns", "deconvolve", "counts.txt", featurecounts_without_count_columns,
         ("featureCounts table has no count columns", "at least one BAM file")),
    # methylation: betas are fractions, not percentages
    Case("methylation-bulk-percent", "deconvolve_methylation", "plasma.tsv", percent("methylation_bulk"),
         ("betas outside [0, 1]", "give beta values")),
    # methylation calls, one file per sample (Bismark .cov.gz, MethylDackel bedGraph)
    Case("bismark-percent-above-100", "deconvolve_methylation", "plasma.cov.gz", methylation_calls("bismark", _first_call_percent("150")),
         ("percent methylated outside [0, 100]", "check the column order")),
    Case("bismark-no-chromosome-overlap", "deconvolve_methylation", "plasma.cov.gz", methylation_calls("bismark", _ensembl_chromosomes),
         ("no chromosome name matches the atlas's", "add the 'chr' prefix", "hg38")),
    Case("methyldackel-without-counts", "deconvolve_methylation", "plasma_CpG.bedGraph", methylation_calls("methyldackel", _counts_dropped),
         ("has 4 columns", "without read counts", "MethylDackel extract bedGraph")),
    Case("atlas-percent", "atlas", "atlas.tsv", percent("atlas"),
         ("betas outside [0, 1]", "divide by 100", "give beta values")),
    # measured fractions of a real bulk (rule evaluate_bulk, with the fixture's deconvolution)
    Case("truth-sample-not-in-bulk", "truth", "truth.tsv", truth(lambda df: df.rename(index={"pbmc_10": "pbmc_99"})),
         (f"`datasets.{RNA}.bulk.{MEASURED_BULK}.truth`: samples ['pbmc_99'] are not in the bulk file inputs/bulk.tsv",
          "use the bulk file's sample ids")),
    Case("truth-percent", "truth", "truth.tsv", truth(lambda df: df * 100),
         ("fractions outside [0, 1]", "divide percentages by 100")),
    Case("truth-nan", "truth", "truth.tsv", truth(_values((1, 2, np.nan))),
         ("1 NaN/inf fractions (samples ['pbmc_10'])", "drop the samples without a measurement")),
    Case("truth-group-not-a-column", "truth", "truth.tsv", truth(lambda df: df.drop(columns="NK")),
         (f"`datasets.{RNA}.bulk.{MEASURED_BULK}.truth_groups`: groups ['NK'] are not columns", "after a column of the truth file")),
    Case("truth-unknown-cell-type", "truth", "truth.tsv", truth(),
         ("cell types ['Plasma cells'] are not cell types of the model", "list only reference cell types"),
         dataset={"truth_groups": {**TRUTH_GROUPS, "B": ["B cells", "Plasma cells"]}}),
    Case("truth-type-in-two-groups", "truth", "truth.tsv", truth(),
         ("cell type 'NK cells' is in two groups ('NK' and 'CD8')", "one group at most"),
         dataset={"truth_groups": {**TRUTH_GROUPS, "CD8": ["T cells CD8", "NK cells"]}}),
]
# fmt: on

#: stage -> (failing rule, its output, its log); {ds} is the dataset the bad file is given to.
STAGES = {
    "split": ("split_reference", "results/{ds}/split/cells.tsv", "logs/{ds}/split_reference.log"),
    "deconvolve": (
        "deconvolve_bulk",
        "results/{ds}/deconvolution/bulk/nnls/proportions.csv",  # `bulk: PATH` is the bulk named `bulk`
        "logs/{ds}/deconvolve_bulk/bulk/nnls.log",
    ),
    "deconvolve_methylation": (
        "deconvolve_bulk_methylation",  # deconvolve_bulk with tissues.csv and detection.csv declared
        "results/{ds}/deconvolution/bulk/nnls/proportions.csv",
        "logs/{ds}/deconvolve_bulk/bulk/nnls.log",
    ),
    "truth": (
        "evaluate_bulk",
        f"results/{{ds}}/bulk_evaluation/{MEASURED_BULK}/nnls/summary_stats.csv",
        f"logs/{{ds}}/evaluate_bulk/{MEASURED_BULK}/nnls.log",
    ),
    "atlas": ("methylation_signature", "results/{ds}/signature/signature.tsv", "logs/{ds}/methylation_signature.log"),
}


def _case_config(case: Case, bad_file: str) -> tuple[str, dict]:
    """The dataset that gets the bad file, and the whole config."""
    config = copy.deepcopy(BASE_CONFIG)
    for section, values in case.config.items():
        config.setdefault(section, {}).update(values)
    if case.stage == "deconvolve":
        dataset, settings = RNA, {"bulk": bad_file}
    elif case.stage == "deconvolve_methylation":
        dataset, settings = METHYLATION, {"bulk": bad_file}
    elif case.stage == "truth":  # the fixture's good bulk, with the bad truth file and the case's groups
        measured = {"path": "inputs/bulk.tsv", "truth": bad_file, "truth_groups": TRUTH_GROUPS, **case.dataset}
        config["datasets"][RNA]["bulk"] = {MEASURED_BULK: measured}
        return RNA, config
    elif case.stage == "split":
        dataset, settings = case.id, {"modality": "rna", "reference": bad_file}
    else:
        dataset, settings = case.id, {"modality": "methylation", "atlas": bad_file}
    config["datasets"].setdefault(dataset, {}).update({**settings, **case.dataset})
    return dataset, config


def _fingerprint(path: Path) -> tuple[str, int] | dict:
    if path.is_dir():  # a 10x matrix folder: every file in it
        return {str(p.relative_to(path)): _fingerprint(p) for p in sorted(path.rglob("*")) if p.is_file()}
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_with_file_problem_and_fix(project, case):
    work = project.work
    bad_file = f"cases/{case.id}/{case.file_name}"
    (work / bad_file).parent.mkdir(parents=True)
    case.write(project.good, work / bad_file)
    dataset, config = _case_config(case, bad_file)
    config_file = f"cases/{case.id}/config.yaml"
    _write_yaml(work / config_file, config)
    rule, output, log = (p.format(ds=dataset) for p in STAGES[case.stage])
    inputs_before = {p: _fingerprint(work / p) for p in (bad_file, config_file)}
    results_before = _files_under(work / "results")

    proc = snakemake(work, output, "--configfile", config_file, check=False)

    printed = proc.stdout + proc.stderr
    assert proc.returncode != 0, printed[-3000:]
    assert scheduled_jobs(printed) == {rule: 1}, printed[-3000:]
    log_text = (work / log).read_text()
    assert "Traceback" not in log_text, log_text
    error_lines = [line for line in log_text.splitlines() if "ERROR" in line]
    assert len(error_lines) == 1, log_text
    error = error_lines[0].split(": ", 1)[1]  # after the logger's "<time> ERROR deconflow" prefix
    assert error.startswith(f"{bad_file}: "), error
    assert ". Fix: " in error, error
    for phrase in case.expect:
        assert phrase in error, error
    assert error in printed  # the user sees the same line in snakemake's output
    assert not (work / output).exists()
    assert _files_under(work / "results") == results_before  # no partial or temporary file
    assert {p: _fingerprint(work / p) for p in inputs_before} == inputs_before


# --------------------------------------------------------------------------- config problems
@dataclass(frozen=True)
class ConfigCase:
    id: str
    change: Callable[[dict], None]
    key: str  # the offending key as the message names it
    expect: tuple[str, ...]


def _set_key(*path, value):
    def change(config: dict) -> None:
        node = config
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    return change


CONFIG_CASES = [
    ConfigCase("unknown-model", _set_key("models", value=["nnls", "deepmagic"]), "models[1]",
               ("'deepmagic' is not one of", "use one of ['nnls', 'hpvade', 'scaden', 'sparse', 'nnls_reads']")),
    ConfigCase("unknown-dataset-model", _set_key("datasets", RNA, "models", value=["cibersortx"]),
               f"datasets.{RNA}.models[0]", ("'cibersortx' is not one of", "use one of")),
    ConfigCase("split-fraction-above-one", _set_key("split", "train", value=1.5), "split.train",
               ("1.5 is greater than or equal to the maximum of 1", "config/README.md")),
    ConfigCase("misspelt-section", _set_key("psuedobulk", value={"n_train": 10}), "psuedobulk",
               ("not allowed", "pseudobulk")),
    ConfigCase("seed-not-an-integer", _set_key("seed", value="seven"), "seed", ("'seven' is not of type 'integer'",)),
    ConfigCase("truth-without-groups",
               _set_key("datasets", RNA, "bulk", value={MEASURED_BULK: {"path": "inputs/bulk.tsv", "truth": "t.tsv"}}),
               f"datasets.{RNA}.bulk.{MEASURED_BULK}", ("'truth_groups' is a dependency of 'truth'",)),
    ConfigCase("rna-dataset-without-reference", _set_key("datasets", "noref", value={"modality": "rna"}),
               "datasets.noref.reference", ("'reference' is a required property", "add")),
    # issue 34: the `train` section is checked too, and YAML 1.1's text for numbers is named
    ConfigCase("train-key-typo", _set_key("train", "hpvade", "lamda_bulk_recon", value=20), "train.hpvade.lamda_bulk_recon",
               ("unknown training setting", "did you mean `lambda_bulk_recon`")),
    ConfigCase("train-section-typo", _set_key("train", "hpvad", value={"vae_hidden": 32}), "train.hpvad",
               ("not a learned model's name", "did you mean `hpvade`")),
    ConfigCase("epochs-as-yaml-text", _set_key("train", "epochs", value="1e2"), "train.epochs", ("text to YAML 1.1", "write 100")),
    ConfigCase("float-as-yaml-text", _set_key("pseudobulk", "dirichlet_alpha", value="5e-1"), "pseudobulk.dirichlet_alpha",
               ("text to YAML 1.1", "write 0.5 or 5.0e-1")),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_bad_config_fails_at_parse_time_naming_file_key_and_fix(project, case):
    work = project.work
    config = copy.deepcopy(BASE_CONFIG)
    case.change(config)
    config_file = f"cases/config-{case.id}/config.yaml"
    _write_yaml(work / config_file, config)
    before = _fingerprint(work / config_file)
    results_before = _files_under(work / "results")

    proc = snakemake(work, f"results/{RNA}/split/cells.tsv", "--configfile", config_file, check=False)

    printed = proc.stdout + proc.stderr
    assert proc.returncode != 0, printed[-3000:]
    assert scheduled_jobs(printed) == {}, printed[-3000:]
    message = f"{config_file}: `{case.key}`"
    assert message in printed, printed[-3000:]
    assert "Fix: " in printed.split(message, 1)[1], printed[-3000:]
    for phrase in case.expect:
        assert phrase in printed, printed[-3000:]
    assert _files_under(work / "results") == results_before
    assert _fingerprint(work / config_file) == before
