"""Bring your own RNA data: 10x references, bulk files as quantifiers write them, gene identifiers.

Every file is written here from a slice of the embedded PBMC reference and the Finotello bulk,
with real GENCODE v22 Ensembl IDs for its genes (the embedded gene table). Each format must give
the same reference, or the same proportions, as the plain h5ad / genes x samples table of the
same data.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deconflow.deconvolve import deconvolve_file
from deconflow.errors import DeconflowError
from deconflow.io import read_reference
from deconflow.io.bulks import detect_format, read_rna_bulk
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.signature import cell_type_mean_cpm

from own_data import write_10x_h5, write_10x_mtx, write_featurecounts, write_rsem, write_salmon
from wfutil import run_env

pytestmark = pytest.mark.workflow

CELL_TYPES = ["B cells", "Monocytes", "NK cells", "T cells CD8"]
CELLS_PER_TYPE = 40
N_GENES = 400
MIN_OVERLAP = 300


class Data:
    """The slice and the files made from it."""


@pytest.fixture(scope="module")
def data(tmp_path_factory, embedded_resources) -> Data:
    out = tmp_path_factory.mktemp("own-data")
    d = Data()
    d.dir = out
    d.gene_table = embedded_resources / "genes" / "gencode.v22.genes.tsv"
    table = pd.read_csv(d.gene_table, sep="\t")
    unique = table.drop_duplicates("symbol", keep=False).drop_duplicates("ensembl_id", keep=False).set_index("symbol")
    full = ad.read_h5ad(embedded_resources / "pbmc" / "reference.h5ad")
    finotello = pd.read_csv(embedded_resources / "pbmc" / "bulk.tsv", sep="\t", index_col=0)
    rng = np.random.default_rng(11)
    cells = np.sort(np.concatenate(
        [rng.choice(np.flatnonzero(full.obs["cell_type"] == t), CELLS_PER_TYPE, replace=False) for t in CELL_TYPES]
    ))
    candidates = np.flatnonzero(full.var_names.isin(unique.index) & full.var_names.isin(finotello.index))
    totals = np.asarray(full.X[cells][:, candidates].sum(axis=0)).ravel()
    genes = np.sort(candidates[np.argsort(-totals, kind="stable")[:N_GENES]])
    d.reference = full[cells][:, genes].copy()
    d.reference.obs = d.reference.obs[["cell_type"]].astype(str)
    d.reference.X = sp.csr_matrix(d.reference.X, dtype=np.int32)
    d.symbols = d.reference.var_names.to_numpy().astype(str)
    d.ensembl = unique.loc[d.symbols, "ensembl_id_version"].to_numpy().astype(str)  # versioned, e.g. ENSG...12
    d.h5ad = out / "reference.h5ad"
    d.reference.write_h5ad(d.h5ad)
    # the 10x files hold 5 more cells without a label and 2 antibody-capture features
    extra = sp.csr_matrix(rng.poisson(1.0, size=(5, N_GENES)).astype(np.int32))
    counts10x = sp.vstack([d.reference.X, extra]).tocsr()
    antibody = sp.csr_matrix(rng.poisson(50.0, size=(counts10x.shape[0], 2)).astype(np.int32))
    counts10x = sp.hstack([counts10x, antibody]).tocsr()
    barcodes = [f"{c}-1" for c in d.reference.obs_names] + [f"UNLABELLED{i}-1" for i in range(5)]
    ids = list(d.ensembl) + ["CD3_TotalSeqB", "CD19_TotalSeqB"]
    names = list(d.symbols) + ["CD3", "CD19"]
    types = ["Gene Expression"] * N_GENES + ["Antibody Capture"] * 2
    d.h5 = out / "filtered_feature_bc_matrix.h5"
    write_10x_h5(counts10x, barcodes, ids, names, d.h5, types)
    d.mtx = out / "filtered_feature_bc_matrix"
    write_10x_mtx(counts10x, barcodes, ids, names, d.mtx, types)
    d.labels = out / "labels.csv"
    pd.DataFrame({"barcode": barcodes[: d.reference.n_obs], "cell_type": d.reference.obs["cell_type"].to_numpy()}).to_csv(
        d.labels, index=False)
    # bulk: Finotello values x 10 as integer counts on the slice genes plus 30 genes the model lacks
    other = finotello.index[~finotello.index.isin(d.symbols) & finotello.index.isin(unique.index)][:30]
    d.bulk_symbols = np.rint(finotello.loc[list(d.symbols) + list(other)] * 10)
    d.bulk_ensembl = d.bulk_symbols.set_axis(unique.loc[d.bulk_symbols.index, "ensembl_id_version"].to_numpy())
    d.lengths = pd.Series(rng.integers(500, 5000, size=len(d.bulk_symbols)), index=d.bulk_ensembl.index)
    signature = cell_type_mean_cpm(sp.csr_matrix(d.reference.X, dtype=np.float32), d.reference.obs["cell_type"].to_numpy(),
                                   d.symbols, CELL_TYPES)
    d.model = out / "nnls.pt"
    save_checkpoint(NNLSModel(signature).checkpoint(), d.model)
    d.table = out / "bulk.tsv"
    d.bulk_symbols.rename_axis("gene").to_csv(d.table, sep="\t")
    d.plain = deconvolve_file(d.model, d.table, out / "plain.csv", MIN_OVERLAP)
    return d


def _same_reference(a, b):
    assert a.genes.tolist() == b.genes.tolist()
    assert a.labels.tolist() == b.labels.tolist()
    assert (a.counts != b.counts).nnz == 0


# --------------------------------------------------------------------------- references
@pytest.mark.parametrize("kind", ["h5", "mtx"])
def test_10x_reference_equals_the_h5ad_it_was_made_from(data, kind, caplog):
    caplog.set_level(logging.INFO)
    plain = read_reference(data.h5ad)
    tenx = read_reference(data.h5 if kind == "h5" else data.mtx, labels=str(data.labels))
    _same_reference(plain, tenx)  # antibody capture left out, the 5 unlabelled cells dropped
    assert [c.removesuffix("-1") for c in tenx.cell_ids] == plain.cell_ids.tolist()
    assert "5 unlabelled cells dropped" in caplog.text
    aliases = tenx.gene_aliases.set_index("feature")["ensembl_id"]
    assert aliases.loc[data.symbols].tolist() == [e.split(".")[0] for e in data.ensembl]  # versions stripped


def test_10x_duplicate_symbols_are_summed(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    counts = sp.csr_matrix(data.reference.X)
    symbols = data.symbols.copy()
    symbols[1] = symbols[0]  # two Ensembl IDs, one symbol
    write_10x_h5(counts, data.reference.obs_names, data.ensembl, symbols, tmp_path / "dup.h5")
    labels = tmp_path / "labels.tsv"
    data.reference.obs.rename_axis("barcode").to_csv(labels, sep="\t")
    ref = read_reference(tmp_path / "dup.h5", labels=str(labels))
    assert len(ref.genes) == N_GENES - 1 and ref.genes[0] == symbols[0]
    dense = counts.toarray()
    np.testing.assert_array_equal(ref.counts[:, 0].toarray().ravel(), dense[:, 0] + dense[:, 1])
    assert "1 gene symbols are shared by 2 features; their counts were summed" in caplog.text


def test_label_barcodes_missing_from_the_matrix_name_both_files(data, tmp_path):
    labels = tmp_path / "labels.csv"
    table = pd.read_csv(data.labels)
    pd.concat([table, pd.DataFrame({"barcode": ["NOTINMATRIX-1"], "cell_type": ["B cells"]})]).to_csv(labels, index=False)
    with pytest.raises(DeconflowError) as info:
        read_reference(data.h5, labels=str(labels))
    message = str(info.value)
    assert message.startswith(f"{labels}: 1 barcodes of the label table are not in the matrix {data.h5}")
    assert "NOTINMATRIX-1" in message and "Fix: " in message


def test_raw_counts_are_taken_from_raw_when_x_is_normalised(data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    adata = data.reference.copy()
    adata.raw = adata.copy()
    adata.X = adata.X.astype(np.float32)
    adata.X.data = np.log1p(adata.X.data / 3.0)
    adata.write_h5ad(tmp_path / "normalised.h5ad")
    _same_reference(read_reference(data.h5ad), read_reference(tmp_path / "normalised.h5ad"))
    assert "using .raw.X" in caplog.text
    del adata.raw
    adata.write_h5ad(tmp_path / "no_raw.h5ad")
    with pytest.raises(DeconflowError) as info:
        read_reference(tmp_path / "no_raw.h5ad")
    message = str(info.value)
    assert "non-integer values in the counts matrix (.X; there is no .raw)" in message
    assert "deconflow needs raw counts" in message and "looked in `counts_layer`, .X, .raw.X" in message


def test_h5ad_with_ensembl_var_names_and_a_symbol_column_reads_as_symbols(data, tmp_path):
    adata = data.reference.copy()
    adata.var["feature_name"] = adata.var_names.to_numpy()
    adata.var_names = data.ensembl
    adata.write_h5ad(tmp_path / "cellxgene.h5ad")
    ref = read_reference(tmp_path / "cellxgene.h5ad")
    _same_reference(read_reference(data.h5ad), ref)
    assert ref.gene_aliases is not None and len(ref.gene_aliases) == N_GENES


# --------------------------------------------------------------------------- bulk formats
def _proportions(data, bulk, name, **settings):
    return deconvolve_file(data.model, bulk, data.dir / f"{name}.csv", MIN_OVERLAP, **settings)


def test_plain_table_proportions_are_informative(data):
    values = data.plain.to_numpy()
    np.testing.assert_allclose(values.sum(axis=1), 1.0)
    assert values.std(axis=0).max() > 0.01  # samples differ: a format that scrambles genes would show


def test_featurecounts_with_versioned_ensembl_ids_gives_the_plain_proportions(data, caplog):
    caplog.set_level(logging.INFO)
    path = data.dir / "counts.txt"
    write_featurecounts(data.bulk_ensembl.astype(int), path)
    assert detect_format(path) == "featurecounts"
    table = _proportions(data, path, "featurecounts", gene_table=str(data.gene_table))
    assert table.index.tolist() == data.plain.index.tolist()  # BAM names without folder and .bam
    np.testing.assert_allclose(table.to_numpy(), data.plain.to_numpy(), atol=1e-9)
    assert "bulk uses Ensembl IDs (with version suffixes), reference (model features) uses gene symbols" in caplog.text
    assert f"{N_GENES} of {N_GENES} model features matched: {N_GENES} by Ensembl ID via the gene table" in caplog.text
    assert f"30 of {N_GENES + 30} bulk rows match no model feature" in caplog.text


def test_reference_own_ensembl_ids_match_without_a_gene_table(data, caplog):
    caplog.set_level(logging.INFO)
    path = data.dir / "counts_own.txt"
    write_featurecounts(data.bulk_ensembl.astype(int), path)
    table = _proportions(data, path, "own_ids", reference=str(data.h5), gene_table=None)
    np.testing.assert_allclose(table.to_numpy(), data.plain.to_numpy(), atol=1e-9)
    assert f"{N_GENES} by Ensembl ID (the reference's own IDs)" in caplog.text
    with pytest.raises(DeconflowError) as info:  # neither the reference nor a table knows Ensembl IDs
        _proportions(data, path, "no_ids", gene_table=None)
    message = str(info.value)
    assert "bulk uses Ensembl IDs (with version suffixes), reference uses gene symbols and has no Ensembl column" in message
    assert "`gene_table`" in message and "`gene_column`" in message


def test_salmon_transcripts_and_genes_give_the_plain_proportions(data):
    folder = data.dir / "salmon"
    genes_folder = data.dir / "salmon_genes"
    for sample in data.bulk_ensembl.columns:
        counts = data.bulk_ensembl[sample]
        # transcript level, GENCODE names: each gene's reads split over two transcripts
        first = np.floor(counts / 3)
        values = pd.concat([first, counts - first])
        names = [f"ENST{i:011d}.1|{g}|OTTHUMG0|OTTHUMT0|{s}-20{k}|{s}|1000|protein_coding|"
                 for k, part in enumerate((first, counts - first))
                 for i, (g, s) in enumerate(zip(part.index, data.bulk_symbols.index), start=k * 100000)]
        write_salmon(values, folder / sample / "quant.sf", pd.concat([data.lengths, data.lengths]), names=names)
        write_salmon(counts, genes_folder / sample / "quant.genes.sf", data.lengths)
    assert detect_format(folder / "pbmc_1" / "quant.sf") == "salmon"
    for given in (folder, str(folder / "*" / "quant.sf"), sorted(genes_folder.glob("*/quant.genes.sf"))):
        table = _proportions(data, given, "salmon", gene_table=str(data.gene_table))
        assert table.index.tolist() == data.plain.index.tolist()  # one row per sample folder
        np.testing.assert_allclose(table.to_numpy(), data.plain.to_numpy(), atol=1e-9)


def test_salmon_tpm_gives_the_proportions_of_the_tpm_table(data):
    folder = data.dir / "salmon_tpm"
    tpm = {}
    for sample in data.bulk_ensembl.columns:
        write_salmon(data.bulk_ensembl[sample], folder / sample / "quant.genes.sf", data.lengths)
        per_base = data.bulk_ensembl[sample] / data.lengths
        tpm[sample] = (per_base / per_base.sum() * 1e6).to_numpy()
    table_path = data.dir / "tpm.tsv"
    pd.DataFrame(tpm, index=data.bulk_symbols.index).rename_axis("gene").to_csv(table_path, sep="\t")
    expected = _proportions(data, table_path, "tpm_table")
    table = _proportions(data, folder, "salmon_tpm", quantity="tpm", gene_table=str(data.gene_table))
    np.testing.assert_allclose(table.to_numpy(), expected.to_numpy(), atol=1e-6)
    assert not np.allclose(table.to_numpy(), data.plain.to_numpy(), atol=1e-3)  # TPM is not the counts


def test_rsem_gives_the_plain_proportions(data):
    folder = data.dir / "rsem"
    folder.mkdir()
    for sample in data.bulk_ensembl.columns:
        write_rsem(data.bulk_ensembl[sample], folder / f"{sample}.genes.results", data.lengths)
    assert detect_format(folder / "pbmc_1.genes.results") == "rsem"
    table = _proportions(data, folder, "rsem", gene_table=str(data.gene_table))
    assert table.index.tolist() == data.plain.index.tolist()
    np.testing.assert_allclose(table.to_numpy(), data.plain.to_numpy(), atol=1e-9)


def test_cli_joins_per_sample_files_into_one_table(data):
    folder = data.dir / "cli_salmon"
    for sample in data.bulk_ensembl.columns:
        write_salmon(data.bulk_ensembl[sample], folder / sample / "quant.genes.sf", data.lengths)
    out = data.dir / "cli.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "deconflow.cli", "deconvolve", "--model", str(data.model), "--bulk", str(folder / "*" / "quant.genes.sf"),
         "--out", str(out), "--min-overlap", str(MIN_OVERLAP), "--gene-table", str(data.gene_table)],
        capture_output=True, text=True, env=run_env(data.dir), check=False,
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(out, index_col=0)
    assert table.index.tolist() == data.plain.index.tolist()
    np.testing.assert_allclose(table.to_numpy(), data.plain.to_numpy(), atol=1e-7)
    assert "format salmon (NumReads), 430 genes x 3 samples" in proc.stderr


def test_per_sample_files_of_other_genes_are_refused(data, tmp_path):
    write_salmon(data.bulk_ensembl["pbmc_1"], tmp_path / "a" / "quant.genes.sf", data.lengths)
    write_salmon(data.bulk_ensembl["pbmc_10"].iloc[:-5], tmp_path / "b" / "quant.genes.sf", data.lengths.iloc[:-5])
    with pytest.raises(DeconflowError, match="lists other genes than .* Fix: quantify every sample against the same annotation"):
        read_rna_bulk(str(tmp_path / "*" / "quant.genes.sf"))


# --------------------------------------------------------------------------- through the pipeline
def test_pipeline_10x_reference_and_featurecounts_bulk_match_the_plain_run(data, tmp_path, embedded_resources):
    """The same data as h5ad + table and as Cell Ranger .h5 + labels + featureCounts / salmon
    folder: the pipeline deconvolves both to the same proportions."""
    import yaml

    from wfutil import project_copy, snakemake

    work = project_copy(tmp_path / "project", embedded_resources)
    inputs = work / "inputs"
    inputs.mkdir()
    write_featurecounts(data.bulk_ensembl.astype(int), inputs / "counts.txt")
    for sample in data.bulk_ensembl.columns:
        write_salmon(data.bulk_ensembl[sample], inputs / "salmon" / sample / "quant.genes.sf", data.lengths)
    for name in ("reference.h5ad", "filtered_feature_bc_matrix.h5", "labels.csv", "bulk.tsv"):
        (inputs / name).write_bytes((data.dir / name).read_bytes())
    shared = {"pseudobulk": {"n_train": 8, "n_val": 4, "n_test": 4, "cells_per_mixture": 20},
              "deconvolution": {"min_feature_overlap": MIN_OVERLAP}, "models": ["nnls"], "signature": {"marker_genes_per_type": None}}
    config = {
        "seed": 1, **shared,
        "datasets": {
            "plain": {"reference": "inputs/reference.h5ad", "bulk": {"table": {"path": "inputs/bulk.tsv"}}},
            "tenx": {
                "reference": "inputs/filtered_feature_bc_matrix.h5", "labels": "inputs/labels.csv",
                "bulk": {"fc": {"path": "inputs/counts.txt"},
                         "salmon": {"path": ["inputs/salmon/*/quant.genes.sf"], "format": "salmon", "quantity": "counts"}},
            },
        },
    }
    (work / "own.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    targets = ["results/plain/deconvolution/table/nnls/proportions.csv", "results/tenx/deconvolution/fc/nnls/proportions.csv",
               "results/tenx/deconvolution/salmon/nnls/proportions.csv"]
    snakemake(work, *targets, "--configfile", "own.yaml")
    plain, featurecounts, salmon = (pd.read_csv(work / t, index_col=0) for t in targets)
    np.testing.assert_allclose(featurecounts.to_numpy(), plain.to_numpy(), atol=1e-7)
    np.testing.assert_allclose(salmon.to_numpy(), plain.to_numpy(), atol=1e-7)
    log = (work / "logs/tenx/deconvolve_bulk/fc/nnls.log").read_text()
    assert "by Ensembl ID (the reference's own IDs)" in log
    split_log = (work / "logs/tenx/split_reference.log").read_text()
    assert "5 unlabelled cells dropped" in split_log
