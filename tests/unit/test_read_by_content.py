"""Tables read by their content, errors that name the cause, and the quantifier outputs users hold.

The files under ``data/cases/`` are slices (whole lines, bytes unchanged) of the handed cases of
issue 22 (``../shared/cases/<name>``: a stray ``"`` in a TSV, header-less htseq-count files, a
transposed bulk, linear values with negative entries); ``bulk_clean.tsv`` holds the same lines of
``resources/pbmc/daism_bulk.tsv`` without the quotes. The other kinds are written here.
Proportions come from an NNLS model over a random signature of the fixture's genes (seeded).
"""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from deconflow.deconvolve import deconvolve_file
from deconflow.errors import DeconflowError
from deconflow.io import read_bulk
from deconflow.io.bulks import detect_format, read_rna_bulk
from deconflow.io.methylation_calls import read_methylation_calls
from deconflow.io.tables import read_numeric_table, read_table
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.plots import miami_plot, read_summary, scatter_plot
from deconflow.truth import read_truth

CASES = Path(__file__).parent / "data" / "cases"
TYPES = ["B cells", "Monocytes", "NK cells", "T cells CD8"]


def _model(genes, path: Path) -> Path:
    rng = np.random.default_rng(3)
    signature = pd.DataFrame(rng.gamma(0.5, 200.0, size=(len(genes), len(TYPES))), index=list(genes), columns=TYPES)
    save_checkpoint(NNLSModel(signature).checkpoint(), path)
    return path


def _gene_column(path: Path, skip_header: bool = True) -> list[str]:
    """First field of every line, quotes stripped: the test's own view of the gene ids."""
    lines = [line for line in path.read_text().splitlines() if line]
    return [line.split("\t")[0].strip('"') for line in lines[1 if skip_header else 0:]]


def _error(call) -> str:
    with pytest.raises(DeconflowError) as info:
        call()
    return str(info.value)


# --------------------------------------------------------------------------- handed cases
@pytest.mark.parametrize("name", ["bulk.tsv", "bulk_one_quote.tsv"])
def test_stray_quote_in_tsv_is_data_and_merges_no_lines(name, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    case = CASES / "stray-quote"
    clean = read_bulk(case / "bulk_clean.tsv")
    quoted = read_bulk(case / name)
    assert quoted.shape == clean.shape == (279, 3)  # one row per line: nothing merged
    assert quoted.index.tolist() == clean.index.tolist()
    np.testing.assert_array_equal(quoted.to_numpy(), clean.to_numpy())
    line = next(n for n, text in enumerate((case / name).read_text().splitlines(), 1) if text.startswith('"ASB15'))
    assert f'stray `"` (first at line {line}: "ASB15)' in caplog.text
    model = _model(_gene_column(case / "bulk_clean.tsv"), tmp_path / "nnls.pt")
    plain = deconvolve_file(model, case / "bulk_clean.tsv", tmp_path / "clean.csv", min_overlap=100)
    repaired = deconvolve_file(model, case / name, tmp_path / "quoted.csv", min_overlap=100)
    pd.testing.assert_frame_equal(repaired, plain)


def test_stray_quote_in_csv_is_an_error_naming_its_line(tmp_path):
    csv = tmp_path / "bulk.csv"
    csv.write_text('gene,S1,S2\nA1BG,1,2\n"ASB15,3,4\nCD8A,5,6\nCD8B,7,8\n')
    message = _error(lambda: read_bulk(csv))
    assert 'line 3' in message and '`"`' in message


def _htseq_expected(folder: Path) -> pd.DataFrame:
    columns = {}
    for path in sorted(folder.glob("S*.counts.txt")):
        pairs = [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("__")]
        columns[path.name.split(".")[0]] = pd.Series([float(v) for _, v in pairs], index=[g for g, _ in pairs])
    return pd.DataFrame(columns)


def test_htseq_files_without_header_are_named_after_the_files(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    folder = CASES / "htseq-headerless"
    assert detect_format(folder / "S1.counts.txt") == "htseq"
    bulk, fmt = read_rna_bulk(str(folder / "S*.counts.txt"))
    expected = _htseq_expected(folder)
    assert fmt == "htseq" and bulk.columns.tolist() == ["S1", "S2", "S3"]
    assert bulk.index.tolist() == expected.index.tolist()  # first gene kept, __ rows dropped
    np.testing.assert_array_equal(bulk.to_numpy(), expected.to_numpy())
    assert "5 summary rows dropped (__no_feature" in caplog.text
    # a first gene with 0 counts in every file used to name every sample "0"
    for sample in ("S1", "S2", "S3"):
        text = (folder / f"{sample}.counts.txt").read_text()
        (tmp_path / f"{sample}.counts.txt").write_text("5S_rRNA\t0\n" + text)
    zero_first, _ = read_rna_bulk(str(tmp_path / "S*.counts.txt"))
    assert zero_first.columns.tolist() == ["S1", "S2", "S3"] and zero_first.index[0] == "5S_rRNA"
    # and the proportions are those of the plain table of the same counts
    plain = tmp_path / "plain.tsv"
    expected.rename_axis("gene").to_csv(plain, sep="\t")
    model = _model(expected.index, tmp_path / "nnls.pt")
    pd.testing.assert_frame_equal(deconvolve_file(model, str(folder / "S*.counts.txt"), tmp_path / "h.csv", min_overlap=100),
                                  deconvolve_file(model, plain, tmp_path / "p.csv", min_overlap=100))


def test_headerless_table_with_several_columns_is_named_after_the_file(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "run7.counts.tsv"
    path.write_text("A1BG\t1\t2\nCD8A\t3\t4\n__no_feature\t9\t9\n")
    bulk, fmt = read_rna_bulk(str(path))
    assert fmt == "htseq" and bulk.columns.tolist() == ["run7_1", "run7_2"] and bulk.index.tolist() == ["A1BG", "CD8A"]


def test_transposed_bulk_is_named_and_never_told_to_lower_the_overlap(tmp_path):
    path = CASES / "transposed-bulk" / "bulk.tsv"
    genes = path.read_text().splitlines()[0].split("\t")[1:]
    model = _model(genes, tmp_path / "nnls.pt")
    message = _error(lambda: deconvolve_file(model, path, tmp_path / "x.csv", min_overlap=100))
    assert "looks transposed: 300 model features are column names" in message
    assert "put genes (features) in rows and samples in columns" in message
    assert "min_feature_overlap" not in message
    assert not (tmp_path / "x.csv").exists()


def test_almost_no_match_never_suggests_lowering_the_overlap(tmp_path):
    model = _model([f"G{i}" for i in range(200)], tmp_path / "nnls.pt")
    bulk = tmp_path / "bulk.tsv"
    pd.DataFrame({"S1": np.arange(1.0, 201.0)}, index=[f"X{i}" for i in range(199)] + ["G0"]).rename_axis("gene").to_csv(bulk, sep="\t")
    message = _error(lambda: deconvolve_file(model, bulk, tmp_path / "x.csv", min_overlap=100))
    assert "only 1 of 200" in message and "min_feature_overlap" not in message
    half = tmp_path / "half.tsv"
    pd.DataFrame({"S1": np.arange(1.0, 81.0)}, index=[f"G{i}" for i in range(80)]).rename_axis("gene").to_csv(half, sep="\t")
    assert "lower `min_feature_overlap`" in _error(lambda: deconvolve_file(model, half, tmp_path / "x.csv", min_overlap=100))


def test_negative_values_in_linear_data_are_named_without_log_advice(tmp_path):
    path = CASES / "negative-values" / "bulk.tsv"
    model = _model(_gene_column(path), tmp_path / "nnls.pt")
    table = pd.read_csv(path, sep="\t", index_col=0)
    n_negative, first = int((table.to_numpy() < 0).sum()), np.argwhere(table.to_numpy() < 0)[0]
    message = _error(lambda: deconvolve_file(model, path, tmp_path / "x.csv", min_overlap=100))
    assert f"{n_negative} negative values (min {table.to_numpy().min():.4g}, first at gene {table.index[first[0]]}, " \
           f"sample {table.columns[first[1]]})" in message
    assert "2**x" not in message and "log" not in message
    log2 = tmp_path / "log2.tsv"
    np.log2(table.clip(lower=0) + 1).to_csv(log2, sep="\t")  # truly log-scaled: still the log-scale message
    assert "look log-scaled" in _error(lambda: deconvolve_file(model, log2, tmp_path / "x.csv", min_overlap=100))


def test_numeric_cell_type_labels_are_read_back_as_text_and_plotted(tmp_path):
    summary = tmp_path / "summary_stats.csv"
    rng = np.random.default_rng(0)
    labels = [str(k) for k in range(11)]
    rows = [(f"mix{s}", label, p, p + 0.01) for s in range(4) for label, p in zip(labels, rng.dirichlet(np.ones(11)))]
    pd.DataFrame(rows, columns=["sample_id", "cell_type", "true_proportion", "predicted_proportion"]).to_csv(summary, index=False)
    table = read_summary(summary)
    assert table["cell_type"].tolist()[:11] == labels and table["true_proportion"].dtype == np.float64
    miami_plot(table, tmp_path / "miami.png", n_samples=4)
    scatter_plot(table, tmp_path / "scatter.png")
    assert (tmp_path / "miami.png").stat().st_size > 0 and (tmp_path / "scatter.png").stat().st_size > 0


# --------------------------------------------------------------------------- same kinds, written here
def test_separator_and_decimal_commas_come_from_the_content(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    reference = pd.DataFrame({"S1": [1.5, 20.25, 300.0], "S2": [4.0, 0.5, 6.75]}, index=["A1BG", "CD8A", "MS4A1"])
    semicolon = tmp_path / "bulk.csv"  # a European spreadsheet's "CSV"
    semicolon.write_text("gene;S1;S2\nA1BG;1,5;4\nCD8A;20,25;0,5\nMS4A1;300;6,75\n")
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("gene\tS1\tS2\nA1BG\t1.5\t4\nCD8A\t20.25\t0.5\nMS4A1\t300\t6.75\n")
    commas = tmp_path / "commas.tsv"
    commas.write_text("gene,S1,S2\nA1BG,1.5,4\nCD8A,20.25,0.5\nMS4A1,300,6.75\n")
    quoted = tmp_path / "quoted.csv"  # comma-separated, decimal commas in quotes
    quoted.write_text('"gene","S1","S2"\n"A1BG","1,5","4"\n"CD8A","20,25","0,5"\n"MS4A1","300","6,75"\n')
    for path in (semicolon, tabs, commas, quoted):
        pd.testing.assert_frame_equal(read_bulk(path), reference, check_names=False)
    assert "bulk.csv: decimal commas (e.g. 1,5) read as decimal points" in caplog.text
    assert "separated by tabs although the name ends in .csv" in caplog.text


def test_r_style_quoted_tsv_and_missing_id_header(tmp_path):
    path = tmp_path / "bulk.tsv"
    path.write_text('"S1"\t"S2"\n"A1BG"\t1\t2\n"CD8A"\t3\t4\n')  # write.table(quote = TRUE): no name for the id column
    bulk = read_bulk(path)
    assert bulk.columns.tolist() == ["S1", "S2"] and bulk.index.tolist() == ["A1BG", "CD8A"]


def test_identifiers_stay_text(tmp_path):
    path = tmp_path / "truth.tsv"
    path.write_text("sample\t1\t10\n007\t0.5\t0.5\n1e3\t0.2\t0.8\n")
    truth = read_truth(path)
    assert truth.index.tolist() == ["007", "1e3"] and truth.columns.tolist() == ["1", "10"]
    table = read_numeric_table(path)
    assert table.index.tolist() == ["007", "1e3"]


def test_ragged_line_is_named(tmp_path):
    path = tmp_path / "bulk.tsv"
    path.write_text("gene\tS1\tS2\nA1BG\t1\t2\nCD8A\t3\nMS4A1\t5\t6\n")
    assert "line 3 has 2 fields" in _error(lambda: read_table(path))
    wide = tmp_path / "wide.tsv"
    wide.write_text("gene\tS1\tS2\nA1BG\t1\t2\nCD8A\t3\t4\t5\nMS4A1\t5\t6\n")
    assert "line 3 has 4 fields" in _error(lambda: read_table(wide))


def test_gene_ids_differing_only_in_case_are_matched_and_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    genes = [f"GENE{i}" for i in range(150)] + ["CD8A", "cd8a"]  # CD8A/cd8a: ambiguous ignoring case
    model = _model(genes, tmp_path / "nnls.pt")
    values = np.random.default_rng(1).gamma(1.0, 100.0, size=(150, 2))
    upper, lower = tmp_path / "upper.tsv", tmp_path / "lower.tsv"
    pd.DataFrame(values, index=genes[:150], columns=["S1", "S2"]).rename_axis("gene").to_csv(upper, sep="\t")
    lower_table = pd.DataFrame(values, index=[g.lower() for g in genes[:150]], columns=["S1", "S2"])
    pd.concat([lower_table, pd.DataFrame([[5.0, 5.0]], index=["Cd8a"], columns=["S1", "S2"])]).rename_axis("gene").to_csv(lower, sep="\t")
    expected = deconvolve_file(model, upper, tmp_path / "u.csv", min_overlap=100)
    got = deconvolve_file(model, lower, tmp_path / "l.csv", min_overlap=100)
    pd.testing.assert_frame_equal(got, expected)
    assert "150 model features matched only when letter case is ignored (e.g. gene0 -> GENE0" in caplog.text
    assert "1 bulk rows match several model features when letter case is ignored" in caplog.text


def test_spreadsheet_dates_are_named_never_summed(tmp_path):
    path = tmp_path / "bulk.tsv"
    path.write_text("gene\tS1\nA1BG\t1\n1-Mar\t5\n2-Sep\t3\n1-Mar\t7\nCD8A\t9\n")
    message = _error(lambda: read_bulk(path))
    assert "['1-Mar']" in message and "dates a spreadsheet made of gene symbols" in message
    assert "never sum" in message and "sum or drop" not in message


@pytest.mark.parametrize("layout,lines,named", [
    ("cytosine report", ["chr1\t10469\t+\t3\t1\tCG\tCGT", "chr1\t10470\t-\t0\t0\tCG\tCGG"], "cytosine report"),
    ("per-read calls", ["Bismark methylation extractor version v0.24.2", "read1\t+\tchr1\t10469\tZ"], "per-read call file"),
    ("methylKit", ["chrBase\tchr\tbase\tstrand\tcoverage\tfreqC\tfreqT", "chr1.10469\tchr1\t10469\tF\t4\t75.00\t25.00"], "methylKit"),
])
def test_another_bismark_or_methyldackel_layout_is_named(tmp_path, layout, lines, named):
    path = tmp_path / "s1.cov"
    path.write_text("\n".join(lines) + "\n")
    message = _error(lambda: read_methylation_calls(path, "bismark"))
    assert named in message and ("bismark.cov.gz" in message or "_CpG.bedGraph" in message
                                 or "--format cytosine_report" in message)  # a cytosine report is read as such (issue 34)


# --------------------------------------------------------------------------- new formats (files written here)
@pytest.fixture
def counts():
    rng = np.random.default_rng(5)
    genes = [f"ENSG{i:011d}.{1 + i % 3}" for i in range(120)]
    return pd.DataFrame(rng.poisson(rng.gamma(1.0, 200.0, size=(120, 1)), size=(120, 3)).astype(float), index=genes,
                        columns=["S1", "S2", "S3"])


def test_nfcore_merged_table_matches_by_its_gene_names(tmp_path, counts, caplog):
    caplog.set_level(logging.INFO)
    symbols = [f"SYM{i}" for i in range(len(counts))]
    path = tmp_path / "salmon.merged.gene_counts.tsv"
    counts.assign(gene_name=symbols)[["gene_name", "S1", "S2", "S3"]].rename_axis("gene_id").to_csv(path, sep="\t")
    assert detect_format(path) == "nfcore"
    model = _model(symbols, tmp_path / "nnls.pt")
    plain = tmp_path / "plain.tsv"
    counts.set_axis(symbols).rename_axis("gene").to_csv(plain, sep="\t")
    pd.testing.assert_frame_equal(deconvolve_file(model, path, tmp_path / "n.csv", min_overlap=100),
                                  deconvolve_file(model, plain, tmp_path / "p.csv", min_overlap=100))
    assert "120 by the file's own gene names" in caplog.text


def _kallisto_tsv(values: pd.Series, path: Path, names) -> None:
    lengths = np.full(len(values), 1000.0)
    rate = values.to_numpy() / (lengths - 200)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"target_id": names, "length": lengths.astype(int), "eff_length": lengths - 200, "est_counts": values.to_numpy(),
                  "tpm": rate / rate.sum() * 1e6}).to_csv(path, sep="\t", index=False)


def test_kallisto_tsv_and_h5_sum_transcripts_to_genes(tmp_path, counts):
    # two GENCODE-style transcripts per gene, each with half the gene's counts
    tx = pd.concat([counts / 2, counts / 2])
    names = [f"ENST{i:011d}.1|{g}|-|-|T{i}|SYM|1000|protein_coding|" for i, g in enumerate(list(counts.index) * 2)]
    for sample in counts.columns:
        _kallisto_tsv(tx[sample], tmp_path / "kallisto" / sample / "abundance.tsv", names)
        with h5py.File(tmp_path / "kallisto" / sample / "abundance.h5", "w") as h5:
            h5["est_counts"] = tx[sample].to_numpy()
            h5["aux/ids"] = np.asarray(names, dtype="S")
            h5["aux/eff_lengths"] = np.full(len(names), 800.0)
    for pattern in ("kallisto/*/abundance.tsv", "kallisto/*/abundance.h5"):
        bulk, fmt = read_rna_bulk(str(tmp_path / pattern))
        assert fmt == "kallisto" and bulk.columns.tolist() == ["S1", "S2", "S3"]
        np.testing.assert_allclose(bulk.loc[counts.index].to_numpy(), counts.to_numpy())
        tpm, _ = read_rna_bulk(str(tmp_path / pattern), quantity="tpm")
        np.testing.assert_allclose(tpm.sum().to_numpy(), 1e6)


def test_star_reads_per_gene_drops_summary_rows_and_picks_the_strand(tmp_path, counts, caplog):
    caplog.set_level(logging.INFO)
    for sample in counts.columns:
        stranded = counts[sample].astype(int)
        lines = ["N_unmapped\t100\t100\t100", "N_multimapping\t50\t50\t50", "N_noFeature\t9\t900\t20", "N_ambiguous\t7\t0\t0"]
        lines += [f"{g}\t{c + 3}\t{c // 20}\t{c}" for g, c in stranded.items()]  # a reverse-stranded library
        (tmp_path / f"{sample}_ReadsPerGene.out.tab").write_text("\n".join(lines) + "\n")
    pattern = str(tmp_path / "*_ReadsPerGene.out.tab")
    bulk, fmt = read_rna_bulk(pattern)
    assert fmt == "star" and bulk.columns.tolist() == ["S1", "S2", "S3"] and len(bulk) == len(counts)
    np.testing.assert_array_equal(bulk.to_numpy(), counts.to_numpy() + 3)  # unstranded has most counts here
    assert "strand column unstranded" in caplog.text and "set `strand` to choose" in caplog.text
    reverse, _ = read_rna_bulk(pattern, strand="reverse")
    np.testing.assert_array_equal(reverse.to_numpy(), counts.to_numpy())


def test_numeric_sample_names_under_an_id_header_stay_a_header(tmp_path):
    path = tmp_path / "bulk.tsv"
    path.write_text("gene\t1\t2\nA1BG\t5\t6\nCD8A\t7\t8\n")
    bulk, fmt = read_rna_bulk(str(path))
    assert fmt == "table" and bulk.columns.tolist() == ["1", "2"] and bulk.index.tolist() == ["A1BG", "CD8A"]


def test_unique_spreadsheet_dates_are_logged(tmp_path, caplog):
    path = tmp_path / "bulk.tsv"
    path.write_text("gene\tS1\nA1BG\t1\n1-Mar\t5\n2-Sep\t3\nCD8A\t9\n")
    assert read_bulk(path).shape == (4, 1)
    assert "2 gene ids are dates a spreadsheet made of gene symbols (1-Mar, 2-Sep" in caplog.text
