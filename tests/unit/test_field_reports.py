"""Field reports, round 2 (issue 34): every kind of ``../shared/cases`` round 2, on fixtures made here.

Kinds: containers recognised by their bytes; what a bulk file already says (an h5ad's counts
layer / ``.raw`` / second gene id; TCGA ``SYMBOL|Entrez`` ids; Entrez-only ids); headers decided
by more than numbers; samples too thin to trust (``low_depth``, ``no_signal``, a profile distance
for models without a signature fit); methylation layouts by content (modkit bedMethyl, cytosine
reports, ``chr/start/end`` region tables, Bismark ``.zero.cov``) and a calibrated methylation
residual; the ``train`` section and YAML 1.1 quirks checked before any job.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from deconflow.config import check_config, check_config_text, check_key_names, check_train_section, number_text_fix
from deconflow.deconvolve import deconvolve_file
from deconflow.depth import log_profiles, profile_calibration, profile_distance, sample_depth
from deconflow.errors import DeconflowError
from deconflow.io import read_bulk
from deconflow.io.bulks import detect_format, expand_bulk_paths, read_rna_bulk
from deconflow.io.methylation_calls import (
    aggregate_calls,
    calls_format,
    calls_from_region_counts,
    parse_region_ids,
    read_methylation_calls,
    read_methylation_samples,
)
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.models.nnls_reads import ReadAwareNNLSModel
from deconflow.trust import calibrate, qc_table, warn_genome_build

from test_methylation import make_atlas

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
TYPES = ["B cells", "Monocytes", "NK cells", "T cells CD8"]
GENES = [f"GENE{i}" for i in range(200)]


def _signature(genes=GENES, seed=3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.gamma(0.5, 200.0, size=(len(genes), len(TYPES))), index=list(genes), columns=TYPES)


def _model(path: Path, genes=GENES) -> Path:
    save_checkpoint(NNLSModel(_signature(genes)).checkpoint(), path)
    return path


def _counts(n_samples=3, seed=5, genes=GENES, depth=2_000_000) -> pd.DataFrame:
    """Integer counts of mixtures of the signature (multinomial draws at ``depth`` reads)."""
    rng = np.random.default_rng(seed)
    signature = _signature(genes)
    p = rng.dirichlet(np.ones(len(TYPES)), size=n_samples)
    profile = (signature.to_numpy() / signature.sum(axis=0).to_numpy()) @ p.T
    counts = np.column_stack([rng.multinomial(depth, profile[:, i] / profile[:, i].sum()) for i in range(n_samples)])
    return pd.DataFrame(counts, index=list(genes), columns=[f"S{i + 1}" for i in range(n_samples)])


def _error(call) -> str:
    with pytest.raises(DeconflowError) as info:
        call()
    message = str(info.value)
    assert ". Fix: " in message and "\n" not in message, message
    return message


# --------------------------------------------------------------------------- containers
def _xlsx(path: Path) -> None:
    """The members of an Office Open XML workbook (enough for its magic: a zip holding xl/)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", "<worksheet/>")


def test_containers_are_read_by_their_bytes_whatever_the_name(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    bulk = _counts()
    plain = tmp_path / "bulk.tsv"
    bulk.to_csv(plain, sep="\t", index_label="gene")
    text = plain.read_bytes()
    files = {
        "gzip_without_gz.tsv": gzip.compress(text),
        "bulk.tsv.bz2": bz2.compress(text),
        "bulk.tsv.xz": lzma.compress(text),
        "plain_text.tsv.gz": text,  # a browser unpacked it without renaming
        "named.bz2.gz": bz2.compress(text),  # bz2 under a gzip name
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "bulk.tsv.zip", "w") as archive:
        archive.write(plain, "bulk.tsv")
    files["bulk.tsv.zip"] = None
    expected = read_bulk(plain)
    for name in files:
        before = (tmp_path / name).read_bytes()
        table, fmt = read_rna_bulk(tmp_path / name)
        assert fmt == "table"
        pd.testing.assert_frame_equal(table, expected, check_like=False)
        assert (tmp_path / name).read_bytes() == before  # inputs never modified
    logged = caplog.text
    assert "plain text (not compressed)" in logged and "gzip-compressed (by its first bytes)" in logged and "zip archive" in logged
    # the CLI path gives the same proportions
    model = _model(tmp_path / "m.pt")
    ref = deconvolve_file(model, plain, tmp_path / "a.csv", min_overlap=50)
    np.testing.assert_array_equal(deconvolve_file(model, tmp_path / "gzip_without_gz.tsv", tmp_path / "b.csv", min_overlap=50), ref)


def test_workbooks_and_archives_are_refused_naming_the_container(tmp_path):
    _xlsx(tmp_path / "bulk.xlsx")
    message = _error(lambda: read_rna_bulk(tmp_path / "bulk.xlsx"))
    assert "Excel workbook (.xlsx)" in message and "tab-separated" in message and "binary" not in message
    _xlsx(tmp_path / "renamed.tsv")  # the container, not the name
    assert "Excel workbook" in _error(lambda: read_rna_bulk(tmp_path / "renamed.tsv"))
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.tsv", "gene\tS1\nA\t1\n")
        archive.writestr("b.tsv", "gene\tS1\nA\t1\n")
    message = _error(lambda: read_rna_bulk(tmp_path / "two.zip"))
    assert "zip archive of 2 files" in message and "unzip it" in message
    import tarfile

    with tarfile.open(tmp_path / "bulk.tar.gz", "w:gz") as archive:
        (tmp_path / "inner.tsv").write_text("gene\tS1\nA\t1\n")
        archive.add(tmp_path / "inner.tsv", "inner.tsv")
    assert "tar archive" in _error(lambda: read_rna_bulk(tmp_path / "bulk.tar.gz"))
    lines = "".join(f"G{i}\t{v}\n" for i, v in enumerate(np.random.default_rng(1).integers(0, 10**6, 2000)))
    packed = gzip.compress(("gene\tS1\n" + lines).encode())
    (tmp_path / "broken.tsv.gz").write_bytes(packed[: len(packed) // 2])  # an interrupted download
    message = _error(lambda: read_rna_bulk(tmp_path / "broken.tsv.gz"))
    assert "damaged gzip" in message and "BadGzipFile" not in message.split(". Fix")[1]
    assert not list(tmp_path.glob("*.csv"))


def test_a_path_that_exists_is_taken_literally_before_it_is_tried_as_a_glob(tmp_path):
    bulk = _counts()
    literal = tmp_path / "cohort[1].tsv"
    bulk.to_csv(literal, sep="\t")
    bulk.to_csv(tmp_path / "cohort1.tsv", sep="\t")  # what the pattern would match
    assert expand_bulk_paths(str(literal)) == [str(literal)]
    assert expand_bulk_paths(str(tmp_path / "cohort[1].tsv").replace("[1]", "[12]")) == [str(tmp_path / "cohort1.tsv")]


# --------------------------------------------------------------------------- headers
@pytest.mark.parametrize("first", ["Hugo_Symbol", "GeneSymbol", "Gene.Symbol", "ID_REF", "gene", "ENTREZID", "Probe Set ID"])
def test_numeric_sample_names_under_an_id_column_name_are_a_header(tmp_path, first):
    bulk = _counts()
    bulk.columns = ["1001", "1002", "1003"]
    path = tmp_path / "bulk.tsv"
    bulk.to_csv(path, sep="\t", index_label=first)
    assert detect_format(path) == "table"
    table, _ = read_rna_bulk(path)
    assert list(table.columns) == ["1001", "1002", "1003"] and len(table) == len(GENES) and first not in table.index


def test_a_headerless_file_starting_with_a_gene_is_still_data(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "S1.counts.txt"
    path.write_text("ID1\t5\nCD3E\t7\nGENE2\t9\n__no_feature\t3\n")  # ID1 is a gene, not an id column
    table, fmt = read_rna_bulk(path)
    assert fmt == "htseq" and list(table.index) == ["ID1", "CD3E", "GENE2"] and list(table.columns) == ["S1"]
    path = tmp_path / "matrix.tsv"
    path.write_text("TP53\t5\t6\nCD3E\t7\t8\n")
    table = read_bulk(path)
    assert list(table.columns) == ["matrix_1", "matrix_2"]
    assert "first line `TP53\t5\t6` read as data" in caplog.text and "put `gene` as the first field" in caplog.text


def test_gct_file_reads_its_samples(tmp_path):
    bulk = _counts()
    body = bulk.copy()
    body.insert(0, "Description", "na")
    path = tmp_path / "bulk.gct"
    path.write_text(f"#1.2\n{len(bulk)}\t{bulk.shape[1]}\n" + body.to_csv(sep="\t", index_label="Name"))
    table, fmt = read_rna_bulk(path)
    assert fmt == "table" and list(table.columns) == list(bulk.columns)
    np.testing.assert_array_equal(table.to_numpy(), bulk.to_numpy())


def test_cbioportal_entrez_column_is_not_a_sample(tmp_path):
    bulk = _counts()
    frame = bulk.copy()
    frame.insert(0, "Entrez_Gene_Id", np.arange(len(frame)) + 1000)
    path = tmp_path / "data_mrna.txt"
    frame.to_csv(path, sep="\t", index_label="Hugo_Symbol")
    table, _ = read_rna_bulk(path)
    assert list(table.columns) == list(bulk.columns)
    np.testing.assert_array_equal(table.to_numpy(), bulk.to_numpy())


# --------------------------------------------------------------------------- gene identifiers
@pytest.mark.parametrize("name, composite_id, extra_ids", [
    # TCGA RSEM: SYMBOL|Entrez, plus genes without a symbol
    ("rsem.genes.normalized_results.tsv", lambda i, g: f"{g}|{7000 + i}", ["?|100130426", "?|100133144"]),
    # gene_id|gene_name: the part the model knows is the second
    ("ids.tsv", lambda i, g: f"ENSG{i:011d}.3|{g}", []),
], ids=["tcga-symbol-pipe-entrez", "ensembl-pipe-symbol"])
def test_composite_ids_are_matched_by_the_part_the_model_knows(tmp_path, name, composite_id, extra_ids):
    bulk = _counts()
    model = _model(tmp_path / "m.pt")
    plain = tmp_path / "plain.tsv"
    bulk.to_csv(plain, sep="\t")
    composite = bulk.copy()
    composite.index = [composite_id(i, g) for i, g in enumerate(bulk.index)]
    extra = pd.DataFrame(9, index=extra_ids, columns=bulk.columns)
    path = tmp_path / name
    pd.concat([extra, composite]).to_csv(path, sep="\t", index_label="gene_id")
    np.testing.assert_array_equal(deconvolve_file(model, path, tmp_path / "a.csv", min_overlap=150),
                                  deconvolve_file(model, plain, tmp_path / "b.csv", min_overlap=150))


def test_entrez_ids_are_named_as_such_with_a_fix(tmp_path):
    bulk = _counts()
    bulk.index = [str(1000 + i) for i in range(len(bulk))]
    path = tmp_path / "entrez.tsv"
    bulk.to_csv(path, sep="\t", index_label="Entrez_Gene_Id")
    message = _error(lambda: deconvolve_file(_model(tmp_path / "m.pt"), path, tmp_path / "x.csv", min_overlap=150))
    assert "Entrez (NCBI) gene IDs" in message and "no Entrez -> symbol mapping" in message and "same species" not in message
    assert not (tmp_path / "x.csv").exists()


# --------------------------------------------------------------------------- h5ad bulks
def _adata(bulk: pd.DataFrame, X: np.ndarray, **kw) -> ad.AnnData:
    return ad.AnnData(X=X, obs=pd.DataFrame(index=list(bulk.columns)), var=pd.DataFrame(index=list(bulk.index)), **kw)


def _log1p(bulk: pd.DataFrame) -> np.ndarray:
    values = bulk.to_numpy(dtype=np.float64).T
    return np.log1p(values / values.sum(axis=1, keepdims=True) * 1e4)


def test_h5ad_bulk_counts_layer_and_raw_are_used_when_x_is_log(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    bulk = _counts()
    model = _model(tmp_path / "m.pt")
    counts_x = tmp_path / "counts.h5ad"
    _adata(bulk, bulk.to_numpy(dtype=np.float64).T).write_h5ad(counts_x)
    layer = _adata(bulk, _log1p(bulk), layers={"counts": bulk.to_numpy(dtype=np.float64).T})
    layer.uns["log1p"] = {"base": None}
    layer.write_h5ad(tmp_path / "layer.h5ad")
    raw = _adata(bulk, bulk.to_numpy(dtype=np.float64).T)
    raw.raw = raw.copy()
    raw.X = _log1p(bulk)
    raw.write_h5ad(tmp_path / "raw.h5ad")
    reference = deconvolve_file(model, counts_x, tmp_path / "a.csv", min_overlap=150)
    for name, used in (("layer.h5ad", "layers['counts']"), ("raw.h5ad", ".raw.X")):
        np.testing.assert_array_equal(deconvolve_file(model, tmp_path / name, tmp_path / "b.csv", min_overlap=150), reference)
        assert f"using the linear values of {used}" in caplog.text


def test_h5ad_with_only_log_values_names_the_base_it_records_or_says_it_records_none(tmp_path):
    bulk = _counts()
    recorded = _adata(bulk, _log1p(bulk))
    recorded.uns["log1p"] = {"base": None}
    recorded.write_h5ad(tmp_path / "recorded.h5ad")
    message = _error(lambda: read_bulk(tmp_path / "recorded.h5ad"))
    assert "np.expm1(adata.X)" in message and "2**" not in message
    base2 = _adata(bulk, _log1p(bulk) / np.log(2))
    base2.uns["log1p"] = {"base": 2}
    base2.write_h5ad(tmp_path / "base2.h5ad")
    assert "2**adata.X - 1" in _error(lambda: read_bulk(tmp_path / "base2.h5ad"))
    linear = _adata(bulk, bulk.to_numpy(dtype=np.float64).T)  # counts put back in .X: uns['log1p'] stays, .X is used
    linear.uns["log1p"] = {"base": None}
    linear.write_h5ad(tmp_path / "linear.h5ad")
    np.testing.assert_array_equal(read_bulk(tmp_path / "linear.h5ad").to_numpy(), bulk.to_numpy())
    _adata(bulk, _log1p(bulk)).write_h5ad(tmp_path / "unknown.h5ad")
    message = _error(lambda: read_bulk(tmp_path / "unknown.h5ad"))
    assert "records no log base" in message and "expm1" not in message and "2**" not in message


def test_h5ad_second_gene_id_column_matches_the_model(tmp_path):
    bulk = _counts()
    model = _model(tmp_path / "m.pt")
    adata = _adata(bulk, bulk.to_numpy(dtype=np.float64).T)
    adata.var_names = [f"ENSG{i:011d}" for i in range(len(bulk))]
    adata.var["gene_symbols"] = list(bulk.index)
    adata.write_h5ad(tmp_path / "ensembl.h5ad")
    plain = tmp_path / "plain.tsv"
    bulk.to_csv(plain, sep="\t")
    np.testing.assert_array_equal(deconvolve_file(model, tmp_path / "ensembl.h5ad", tmp_path / "a.csv", min_overlap=150),
                                  deconvolve_file(model, plain, tmp_path / "b.csv", min_overlap=150))


# --------------------------------------------------------------------------- depth and signal
def test_thin_and_one_gene_samples_are_flagged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    rng = np.random.default_rng(2)
    deep = _counts(n_samples=1, depth=20_000_000)
    profile = deep.iloc[:, 0].to_numpy() / deep.iloc[:, 0].sum()
    bulk = pd.DataFrame({"deep": deep.iloc[:, 0], "r20k": rng.multinomial(20_000, profile), "r300k": rng.multinomial(300_000, profile),
                         "one_gene": np.where(np.arange(len(GENES)) == 7, 5000, 0)}, index=GENES)
    path = tmp_path / "bulk.tsv"
    bulk.to_csv(path, sep="\t")
    model = _model(tmp_path / "m.pt")
    deconvolve_file(model, path, tmp_path / "out" / "p.csv", min_overlap=150, qc=True)
    qc = pd.read_csv(tmp_path / "out" / "qc.csv", keep_default_na=False).set_index("sample_id")
    assert qc.loc["deep", "flag"] == "" and qc.loc["r300k", "flag"] == ""
    assert qc.loc["r20k", "flag"].split(";")[0] == "low_depth"
    assert {"low_depth", "no_signal"} <= set(qc.loc["one_gene", "flag"].split(";"))
    assert qc.loc["r20k", "reads"] == 20_000 and qc.loc["one_gene", "nonzero_features"] == 1
    assert "deep 20,000,000 reads" in caplog.text and "['r20k', 'one_gene'] are below the minimum depth" in caplog.text
    # a lower documented minimum lifts the flag
    deconvolve_file(model, path, tmp_path / "low" / "p.csv", min_overlap=150, qc=True, min_reads=10_000)
    assert pd.read_csv(tmp_path / "low" / "qc.csv", keep_default_na=False).set_index("sample_id").loc["r20k", "flag"] == ""


def test_non_integer_input_counts_nonzero_markers_instead_of_reads():
    model = NNLSModel(_signature())
    tpm = _counts() / 3.7
    depth = sample_depth(tpm, model)
    assert depth["reads"].isna().all() and (depth["nonzero_features"] > 0).all()
    assert sample_depth(_counts(), model)["reads"].tolist() == [2_000_000] * 3


class _NoFitModel(NNLSModel):
    """An NNLS model reporting no signature fit of its own, as Scaden does."""

    name = "nofit"

    def relative_residual(self, features):
        return None


def test_models_without_a_signature_fit_get_a_calibrated_profile_distance():
    rng = np.random.default_rng(4)
    signature = _signature()
    model = _NoFitModel(signature)
    truth = rng.dirichlet(np.ones(len(TYPES)), size=60)
    val = (signature.to_numpy() @ truth.T).T * rng.lognormal(0, 0.1, size=(60, len(GENES)))
    calibration = calibrate(model, val, truth, {"replicates": 3})
    assert len(calibration["validation_profile_distances"]) == 60 and calibration["validation_residuals"] is None
    one_gene = np.where(np.arange(len(GENES)) == 3, 100.0, 0.0)
    features = np.vstack([val[:2], one_gene, rng.permuted(val[0])])
    qc = qc_table(model, features, ["a", "b", "one", "shuffled"], model.predict(features), calibration, False)
    assert qc["flag"].tolist()[:2] == ["", ""]
    assert "profile_beyond_validation" in qc["flag"][2] and "no_signal" in qc["flag"][2]
    assert "profile_beyond_validation" in qc["flag"][3] and qc["profile_distance"][3] > qc["profile_distance"][0]
    # the distance itself: 0 for the reference, 1 - Pearson otherwise
    reference = np.nanmean(log_profiles(val, model.used_features()), axis=0)
    assert profile_distance(reference[None, :], reference)[0] == pytest.approx(0.0, abs=1e-12)
    assert profile_calibration(val, model.used_features())["validation_profile_distances"] == calibration["validation_profile_distances"]


# --------------------------------------------------------------------------- methylation layouts
def _region_reads(n_regions=120, seed=1):
    atlas = make_atlas(n_regions=n_regions, seed=seed)
    regions = parse_region_ids(atlas.index)
    rng = np.random.default_rng(seed)
    total = rng.integers(5, 40, size=n_regions)
    methylated = rng.binomial(total, atlas.iloc[:, 0].to_numpy())
    return atlas, regions, methylated, total


def _modkit_lines(chrom, position, methylated, total, rng, space_delimited=False) -> str:
    """modkit pileup --cpg --combine-strands rows: an `m` and an `h` row per CpG (5hmC a share of the modified calls)."""
    lines = []
    for c, p, m, t in zip(chrom, position, methylated, total):
        h = rng.binomial(m, 0.1)
        five_mc, canonical = m - h, t - m
        for code, n_mod, other in (("h", h, five_mc), ("m", five_mc, h)):
            counts = [t, f"{100 * n_mod / t:.2f}", n_mod, canonical, other, 0, 0, 0, 0]
            head = [c, p, p + 1, code, t, ".", p, p + 1, "255,0,0"]
            sep = " " if space_delimited else "\t"
            lines.append("\t".join(map(str, head)) + "\t" + sep.join(map(str, counts)))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("space_delimited", [False, True])
def test_modkit_bedmethyl_equals_the_same_calls_as_bismark(tmp_path, space_delimited):
    atlas, regions, methylated, total = _region_reads()
    rng = np.random.default_rng(3)
    chrom, position, m, t = calls_from_region_counts(regions, methylated, total, rng)
    path = tmp_path / "sample1.bed.gz"
    path.write_bytes(gzip.compress(_modkit_lines(chrom, position, m, t, rng, space_delimited).encode()))
    assert calls_format(path) == "modkit"
    calls = read_methylation_calls(path, "modkit")
    got_m, got_t = aggregate_calls(calls, regions)
    np.testing.assert_array_equal(got_t, total)
    np.testing.assert_array_equal(got_m, methylated)  # 5mC + 5hmC
    message = _error(lambda: read_methylation_calls(path, "bismark"))
    assert "modkit pileup bedMethyl" in message and "--format modkit" in message


def test_encode_bedmethyl_and_nanopolish_frequencies(tmp_path):
    regions = parse_region_ids(["chr1:100-200", "chr1:200-300"])
    rows = [("chr1", 100, 6, 50.0), ("chr1", 199, 3, 33.3333), ("chr1", 250, 4, 100.0), ("chr1", 300, 9, 0.0)]
    text = "".join(f"{c}\t{p}\t{p + 1}\tsample\t{min(n, 1000)}\t+\t{p}\t{p + 1}\t0,255,0\t{n}\t{pct}\n" for c, p, n, pct in rows)
    (tmp_path / "ENCFF001.bed").write_text(text)
    assert calls_format(tmp_path / "ENCFF001.bed") == "bedmethyl"
    calls = read_methylation_calls(tmp_path / "ENCFF001.bed", "bedmethyl")
    assert [v.tolist() for v in aggregate_calls(calls, regions)] == [[3 + 1, 4], [6 + 3, 4]]
    (tmp_path / "freq.tsv").write_text("chromosome\tstart\tend\tnum_motifs_in_group\tcalled_sites\tcalled_sites_methylated\t"
                                       "methylated_frequency\tgroup_sequence\nchr1\t120\t121\t1\t10\t7\t0.7\tACGT\n")
    assert calls_format(tmp_path / "freq.tsv") == "region_counts"
    calls = read_methylation_calls(tmp_path / "freq.tsv", "region_counts")
    assert [v.tolist() for v in aggregate_calls(calls, regions)] == [[7, 0], [10, 0]]


def test_cytosine_report_and_zero_based_cov_by_content_and_name(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    regions = parse_region_ids(["chr1:100-200", "chr1:200-300"])
    # 1-based positions 101 (0-based 100: first base of region 1) and 200 (0-based 199: its last), 201 (region 2)
    report = "chr1\t101\t+\t3\t1\tCG\tCGA\nchr1\t150\t+\t9\t9\tCHH\tCAT\nchr1\t200\t-\t0\t2\tCG\tCGT\nchr1\t201\t+\t4\t0\tCG\tCGG\n"
    (tmp_path / "s.CpG_report.txt").write_text(report)
    assert calls_format(tmp_path / "s.CpG_report.txt") == "cytosine_report"
    calls = read_methylation_calls(tmp_path / "s.CpG_report.txt", "cytosine_report")
    assert [v.tolist() for v in aggregate_calls(calls, regions)] == [[3, 4], [6, 4]]
    assert calls.sample_id == "s"
    # Bismark --zero_based coverage: the same bases, 0-based, named .zero.cov
    (tmp_path / "z.zero.cov").write_text("chr1\t100\t101\t75\t3\t1\nchr1\t199\t200\t0\t0\t2\nchr1\t200\t201\t100\t4\t0\n")
    calls = read_methylation_calls(tmp_path / "z.zero.cov", calls_format(tmp_path / "z.zero.cov"))
    assert [v.tolist() for v in aggregate_calls(calls, regions)] == [[3, 4], [6, 4]]
    assert "0-based starts" in caplog.text and ".zero.cov" in caplog.text


def test_region_tables_with_chr_start_end_columns(tmp_path):
    atlas, regions, methylated, total = _region_reads()
    betas = pd.Series(methylated / total, index=atlas.index)
    ids = tmp_path / "ids.tsv"
    betas.rename("plasma1").to_frame().to_csv(ids, sep="\t", index_label="region")
    table = pd.DataFrame({"chr": regions["chrom"], "start": regions["start"], "end": regions["end"],
                          "startCpG": np.arange(len(regions)) * 4, "endCpG": np.arange(len(regions)) * 4 + 4, "plasma1": betas.to_numpy()})
    wgbs = tmp_path / "plasma1.beta_to_table.tsv"
    table.to_csv(wgbs, sep="\t", index=False)
    methylome = tmp_path / "plasma1.methylome.tsv"
    pd.DataFrame({"chr": regions["chrom"], "start": regions["start"], "end": regions["end"], "total_calls": total,
                  "modified_calls": methylated}).to_csv(methylome, sep="\t", index=False)
    nnls, reads = tmp_path / "nnls.pt", tmp_path / "reads.pt"
    save_checkpoint(NNLSModel(atlas, normalization="beta").checkpoint(), nnls)
    save_checkpoint(ReadAwareNNLSModel(atlas).checkpoint(), reads)
    expected = deconvolve_file(nnls, ids, tmp_path / "a.csv", min_overlap=100)
    np.testing.assert_allclose(deconvolve_file(nnls, wgbs, tmp_path / "b.csv", min_overlap=100).to_numpy(), expected.to_numpy(), atol=1e-12)
    assert calls_format(methylome) == "region_counts"
    m, t = read_methylation_samples([methylome], atlas.index)
    assert list(t.columns) == ["plasma1"]
    np.testing.assert_array_equal(t["plasma1"].to_numpy(), total)
    np.testing.assert_array_equal(m["plasma1"].to_numpy(), methylated)
    in_memory = ReadAwareNNLSModel(atlas).predict_with_coverage((methylated / total)[None, :], total[None, :].astype(float))
    np.testing.assert_allclose(deconvolve_file(reads, methylome, tmp_path / "c.csv", min_overlap=100).to_numpy(), in_memory, atol=1e-12)


def test_chromosome_names_as_ids_are_never_offered_a_sum(tmp_path):
    path = tmp_path / "regions.tsv"
    path.write_text("chromosome_name\tbegin_pos\tend_pos\tplasma1\nchr1\t100\t200\t0.5\nchr1\t300\t400\t0.7\nchr2\t100\t200\t0.1\n")
    message = _error(lambda: read_bulk(path, allow_missing=True))
    assert "chromosome names" in message and "chr, start, end" in message and "never sum" in message


# --------------------------------------------------------------------------- methylation residual calibration
def test_methylation_residual_is_calibrated_and_a_sample_beyond_it_warns_of_the_genome_build(caplog):
    atlas = make_atlas(n_regions=300, seed=2)
    model = NNLSModel(atlas, normalization="beta")
    rng = np.random.default_rng(6)
    truth = rng.dirichlet(np.ones(atlas.shape[1]) * 0.3, size=40)
    val = np.clip(truth @ atlas.to_numpy().T + rng.normal(0, 0.02, size=(40, len(atlas))), 0, 1)
    calibration = calibrate(model, val, truth, {"replicates": 3})
    assert calibration["validation_residuals"] and len(calibration["validation_residuals"]) == 40
    other_build = rng.permuted(val[0])  # every window holds CpGs of another locus
    features = np.vstack([val[:1], other_build])
    qc = qc_table(model, features, ["matched", "hg19"], model.predict(features), calibration, False)
    assert qc["flag"].tolist() == ["", "residual_beyond_validation"]
    caplog.set_level(logging.INFO)
    warn_genome_build(qc, calibration)
    assert "['hg19']" in caplog.text and "another genome build than the atlas" in caplog.text and "matched" not in caplog.text


# --------------------------------------------------------------------------- config
def _test_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "test.yaml").read_text())


def test_train_key_and_section_typos_name_the_closest_allowed_name(tmp_path):
    config = _test_config()
    config["train"]["hpvade"]["lamda_bulk_recon"] = 20
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    message = _error(lambda: check_train_section(config, [str(path)]))
    assert message.startswith(f"{path}: `train.hpvade.lamda_bulk_recon`") and "did you mean `lambda_bulk_recon`" in message
    config = _test_config()
    config["train"]["hpvad"] = config["train"].pop("hpvade")
    path.write_text(yaml.safe_dump(config))
    message = _error(lambda: check_train_section(config, [str(path)]))
    assert "`train.hpvad`" in message and "did you mean `hpvade`" in message
    config = _test_config()
    config["train"]["lerning_rate"] = 0.01
    assert "did you mean `learning_rate`" in _error(lambda: check_train_section(config, []))
    check_train_section(_test_config(), [])  # the shipped configs pass
    config = _test_config()
    config["pseudobulk"]["n_trian"] = 10  # a schema section names the closest key too
    assert "did you mean `n_train`" in _error(lambda: check_config(config, SCHEMA, []))
    for name in ("config.yaml", "full.yaml", "test_methylation.yaml"):
        check_config_text(yaml.safe_load((ROOT / "config" / name).read_text()), [])


def test_yaml_scientific_notation_text_names_the_key_and_the_fix(tmp_path):
    assert number_text_fix("5e-1")[1] == "write 0.5 or 5.0e-1" and number_text_fix("0.5") is None and number_text_fix(0.5) is None
    config = _test_config()
    config["train"]["epochs"] = "1e2"
    message = _error(lambda: check_train_section(config, []))
    assert "`train.epochs`" in message and "text to YAML 1.1" in message and "write 100" in message
    from deconflow.training import resolve_settings

    message = _error(lambda: resolve_settings("hpvade", {"epochs": "1e2"}))  # the job, had the dry run been skipped
    assert "train.epochs" in message and "write 100" in message
    config = _test_config()
    config["pseudobulk"]["dirichlet_alpha"] = "5e-1"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    message = _error(lambda: check_config(config, SCHEMA, [str(path)]))
    assert "`pseudobulk.dirichlet_alpha`" in message and "text to YAML 1.1" in message and "write 0.5 or 5.0e-1" in message
    config["pseudobulk"]["dirichlet_alpha"] = 1.0
    config["pseudobulk"]["n_train"] = "2e3"
    assert "write 2000" in _error(lambda: check_config(config, SCHEMA, [str(path)]))


def test_a_bulk_named_on_is_refused_with_the_quoting_fix(tmp_path):
    path = tmp_path / "on.yaml"
    path.write_text("datasets:\n  tiny:\n    bulk:\n      pre: {path: a.tsv}\n      on: {path: b.tsv}\n")
    config = yaml.safe_load(path.read_text())
    assert True in config["datasets"]["tiny"]["bulk"]  # what PyYAML does
    message = _error(lambda: check_key_names(config, [str(path)]))
    assert message.startswith(f"{path}: ") and "`on`" in message and "`datasets.tiny.bulk`" in message and 'quote it: "on":' in message
    path.write_text('datasets:\n  tiny:\n    bulk:\n      "on": {path: b.tsv}\n')
    check_key_names(yaml.safe_load(path.read_text()), [str(path)])


def test_a_pure_tissue_on_a_panel_is_not_taken_for_another_genome_build(caplog):
    """nnls_reads (no residual of its own) is checked by the fit distance: a pure cell type read on
    5 % of the regions lies far from the cfDNA-like validation mean but is fitted by the atlas, so
    it is not flagged; the same calls on permuted windows (another build) are, with the warning."""
    atlas = make_atlas(n_regions=400, seed=3)
    model = ReadAwareNNLSModel(atlas)
    rng = np.random.default_rng(8)
    truth = rng.dirichlet(np.ones(atlas.shape[1]), size=40)
    val = np.clip(truth @ atlas.to_numpy().T + rng.normal(0, 0.03, size=(40, len(atlas))), 0, 1)
    calibration = calibrate(model, val, truth, {"replicates": 3})
    assert calibration["validation_fit_distances"] and "validation_profile_distances" not in calibration
    panel = np.full(len(atlas), np.nan)
    covered = rng.choice(len(atlas), size=20, replace=False)
    panel[covered] = atlas.to_numpy()[covered, 0]  # one type alone: unlike every validation mixture
    other_build = np.full(len(atlas), np.nan)
    other_build[covered] = rng.permuted(val[0])[covered]
    features = np.vstack([panel, other_build])
    qc = qc_table(model, features, ["panel", "hg19"], model.predict(features), calibration, False)
    assert "profile_beyond_validation" not in qc["flag"][0] and qc["profile_distance"][0] < 0.01
    assert "profile_beyond_validation" in qc["flag"][1]
    caplog.set_level(logging.INFO)
    warn_genome_build(qc, calibration)
    assert "['hg19']" in caplog.text and "panel" not in caplog.text


def test_the_cli_never_overwrites_outputs_without_being_asked(tmp_path, capsys):
    """A second `deconflow deconvolve` into the same --out refuses with one line naming the file,
    writes nothing (the user's files keep their bytes); --overwrite replaces them."""
    from deconflow.cli import main

    signature = pd.DataFrame(np.eye(3) * 100 + 1, index=["CD3E", "MS4A1", "LYZ"], columns=["T", "B", "Mono"])
    model = tmp_path / "nnls.pt"
    save_checkpoint(NNLSModel(signature).checkpoint(), model)
    bulk = tmp_path / "bulk.tsv"
    bulk.write_text("gene\ts1\ts2\nCD3E\t50\t10\nMS4A1\t30\t20\nLYZ\t20\t70\n")
    out = tmp_path / "out" / "p.csv"
    args = ["deconvolve", "--model", str(model), "--bulk", str(bulk), "--out", str(out), "--min-overlap", "3", "--qc"]
    main(args)
    (tmp_path / "out" / "qc.csv").write_text("mine\n")
    before = out.read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code != 0
    err = [line for line in capsys.readouterr().err.splitlines() if "output already exists" in line]
    assert len(err) == 1 and str(out) in err[0] and "--overwrite" in err[0]
    assert (tmp_path / "out" / "qc.csv").read_text() == "mine\n" and out.read_bytes() == before
    main(args + ["--overwrite"])
    assert (tmp_path / "out" / "qc.csv").read_text() != "mine\n"
