"""Bismark / MethylDackel call files: reading, aggregation into atlas regions, deconvolution."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from deconflow.deconvolve import deconvolve_file
from deconflow.errors import DeconflowError
from deconflow.methylation import simulate_methylation
from deconflow.io.methylation_calls import (
    aggregate_calls,
    calls_format,
    calls_from_region_counts,
    parse_region_ids,
    read_methylation_calls,
    read_methylation_samples,
    sample_id_from_path,
    write_calls,
)
from deconflow.models import save_checkpoint
from deconflow.models.nnls import NNLSModel
from deconflow.models.nnls_reads import ReadAwareNNLSModel

from test_methylation import make_atlas, settings

SUFFIX = {"bismark": ".cov.gz", "methyldackel": "_CpG.bedGraph"}


# --------------------------------------------------------------------------- coordinates
@pytest.mark.parametrize("fmt", ["bismark", "methyldackel"])
def test_both_ends_of_a_region(tmp_path, fmt):
    """Region chr1:100-200 (BED) holds 0-based positions 100..199 (1-based 101..200), no more."""
    regions = parse_region_ids(["chr1:100-200", "chr1:200-300"])
    position = np.array([99, 100, 199, 200])  # just before, first base, last base, first of the next
    methylated, total = np.array([1, 2, 4, 8]), np.array([1, 3, 5, 13])
    path = tmp_path / f"s{SUFFIX[fmt]}"
    write_calls(path, ["chr1"] * 4, position, methylated, total, fmt)
    if fmt == "bismark":  # 1-based: the C at 0-based 100 is written as 101
        assert path.exists() and calls_format(path) == "bismark"
    calls = read_methylation_calls(path, calls_format(path))
    np.testing.assert_array_equal(calls.position, position)
    m, t = aggregate_calls(calls, regions)
    np.testing.assert_array_equal(m, [2 + 4, 8])
    np.testing.assert_array_equal(t, [3 + 5, 13])


def test_bismark_is_one_based_and_bedgraph_zero_based(tmp_path):
    """The same base, 0-based 100, in each tool's own layout, lands in region chr1:100-101."""
    regions = parse_region_ids(["chr1:100-101"])
    (tmp_path / "a.cov").write_text("chr1\t100\t100\t100\t1\t0\nchr1\t101\t101\t0\t0\t2\n")
    (tmp_path / "b.bedGraph").write_text('track type="bedGraph"\nchr1\t99\t100\t100\t1\t0\nchr1\t100\t101\t0\t0\t2\n')
    for name in ("a.cov", "b.bedGraph"):
        calls = read_methylation_calls(tmp_path / name, calls_format(tmp_path / name))
        assert [v.tolist() for v in aggregate_calls(calls, regions)] == [[0], [2]], name


def test_vectorised_aggregation_equals_a_loop_over_calls():
    rng = np.random.default_rng(0)
    ids = []
    for chrom in ("chr1", "chr2", "chrX"):
        starts = np.sort(rng.integers(0, 5000, 40))
        ids += [f"{chrom}:{s}-{s + w}" for s, w in zip(starts, rng.integers(1, 400, 40))]  # overlapping regions too
    regions = parse_region_ids(ids)
    n = 3000
    chrom = rng.choice(["chr1", "chr2", "chrX", "chrY"], n)
    position = rng.integers(0, 5600, n)
    total = rng.integers(1, 20, n)
    methylated = rng.binomial(total, 0.4)
    from deconflow.io.methylation_calls import MethylationCalls

    calls = MethylationCalls("s", pd.Categorical(chrom), position, methylated, total, "mem")
    m, t = aggregate_calls(calls, regions)
    for r, (c, s, e) in enumerate(regions[["chrom", "start", "end"]].itertuples(index=False)):
        inside = (chrom == c) & (position >= s) & (position < e)
        assert m[r] == methylated[inside].sum() and t[r] == total[inside].sum()


def test_sample_ids_and_format_detection(tmp_path):
    assert sample_id_from_path("data/plasma_1_bismark_bt2.bismark.cov.gz") == "plasma_1"
    assert sample_id_from_path("plasma_2_CpG.bedGraph") == "plasma_2"
    assert calls_format("x.cov") == "bismark" and calls_format("x.bedgraph.gz") == "methyldackel"
    table = tmp_path / "calls.txt"
    table.write_text('track type="bedGraph"\nchr1\t10\t11\t50\t1\t1\n')
    assert calls_format(table) == "methyldackel"
    assert calls_format(tmp_path / "bulk.tsv") is None and calls_format("x.cov", "table") is None


# --------------------------------------------------------------------------- same proportions as the table path
def _fingerprints(paths):
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in paths}


def test_call_files_give_the_same_proportions_as_the_plain_table_path(tmp_path):
    """Reads simulated on atlas regions, written as Bismark .cov.gz (and a MethylDackel bedGraph),
    aggregate back to the simulated counts; deconvolving them equals the in-memory path (coverage
    from the simulation) for nnls_reads and the betas-table path for nnls."""
    atlas = make_atlas(n_regions=300, seed=1)
    sim = simulate_methylation(atlas, settings(n_mixtures=4, depth_range=(2.0, 12.0)), seed=5)
    methylated = np.rint(np.nan_to_num(sim["features"]) * sim["coverage"]).astype(np.int64)
    regions = parse_region_ids(atlas.index)
    rng = np.random.default_rng(9)
    files = []
    for i in range(4):
        fmt = "methyldackel" if i == 3 else "bismark"
        chrom, position, m, t = calls_from_region_counts(regions, methylated[i], sim["coverage"][i], rng)
        path = tmp_path / "calls" / f"plasma_{i}{SUFFIX[fmt]}"
        path.parent.mkdir(exist_ok=True)
        write_calls(path, chrom, position, m, t, fmt)
        files.append(path)
    before = _fingerprints(files)
    m_table, t_table = read_methylation_samples(files, atlas.index)
    assert list(t_table.columns) == [f"plasma_{i}" for i in range(4)]
    np.testing.assert_array_equal(t_table.to_numpy().T, sim["coverage"])
    np.testing.assert_array_equal(m_table.to_numpy().T, methylated)

    reads_ckpt, nnls_ckpt = tmp_path / "nnls_reads.pt", tmp_path / "nnls.pt"
    save_checkpoint(ReadAwareNNLSModel(atlas).checkpoint(), reads_ckpt)
    save_checkpoint(NNLSModel(atlas, normalization="beta").checkpoint(), nnls_ckpt)
    # nnls_reads: files (a glob for the .cov.gz, a path for the bedGraph) == the simulated path
    from_files = deconvolve_file(reads_ckpt, [str(tmp_path / "calls" / "*.cov.gz"), str(files[3])], tmp_path / "a.csv", min_overlap=100)
    in_memory = ReadAwareNNLSModel(atlas).predict_with_coverage(sim["features"], sim["coverage"])
    np.testing.assert_allclose(from_files.to_numpy(), in_memory, atol=1e-12)
    # nnls: files == a betas table of the same fractions (NaN where no reads)
    table_path = tmp_path / "betas.tsv"
    pd.DataFrame(sim["features"].T, index=atlas.index, columns=from_files.index).to_csv(table_path, sep="\t", na_rep="NaN")
    np.testing.assert_allclose(deconvolve_file(nnls_ckpt, files, tmp_path / "b.csv", min_overlap=100).to_numpy(),
                               deconvolve_file(nnls_ckpt, table_path, tmp_path / "c.csv", min_overlap=100).to_numpy(), atol=1e-9)
    assert _fingerprints(files) == before  # inputs never modified


# --------------------------------------------------------------------------- bad input
BAD = {
    "percent-above-100": ("bismark", "chr1\t1001\t1001\t150\t3\t0\n", ("percent methylated outside [0, 100]", "column order")),
    "percent-disagrees": ("bismark", "chr1\t1001\t1001\t25\t3\t0\n", ("disagrees with 100·methylated", "column order")),
    "negative-count": ("bismark", "chr1\t1001\t1001\t0\t0\t-2\n", ("non-negative integers",)),
    "no-counts": ("bismark", "chr1\t1000\t1001\t100\n", ("has 4 columns", "without read counts", "Bismark coverage file")),
    "zero-based-as-bismark": ("bismark", "chr1\t0\t1\t100\t1\t0\n", ("not 1-based", "format: methyldackel")),
    "no-chr-prefix": ("bismark", "1\t1001\t1001\t100\t3\t0\n", ("no chromosome name matches the atlas", "add the 'chr' prefix")),
    "other-build-names": ("methyldackel", "NC_000001.11\t1000\t1001\t100\t3\t0\n", ("no chromosome name matches", "genome build")),
    "empty": ("bismark", "", ("has no calls",)),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_call_file_is_refused_naming_file_problem_and_fix(tmp_path, case):
    fmt, text, phrases = BAD[case]
    atlas = make_atlas(n_regions=50)
    path = tmp_path / f"bad{SUFFIX[fmt].removesuffix('.gz')}"
    path.write_text(text)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ReadAwareNNLSModel(atlas).checkpoint(), ckpt)
    before = _fingerprints([path])
    with pytest.raises(DeconflowError) as info:
        deconvolve_file(ckpt, path, tmp_path / "out.csv", min_overlap=1)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and ". Fix: " in message and "\n" not in message, message
    for phrase in phrases:
        assert phrase in message, message
    assert not (tmp_path / "out.csv").exists()
    assert _fingerprints([path]) == before


def test_calls_for_an_rna_model_and_globs_without_match_are_refused(tmp_path):
    atlas = make_atlas(n_regions=50)
    ckpt = tmp_path / "rna.pt"
    save_checkpoint(NNLSModel(atlas, normalization="cpm").checkpoint(), ckpt)
    path = tmp_path / "s.cov"
    write_calls(path, ["chr1"], [1000], [1], [2], "bismark")
    with pytest.raises(DeconflowError, match="given to a cpm model"):
        deconvolve_file(ckpt, path, tmp_path / "o.csv")
    with pytest.raises(DeconflowError, match="matches no file"):
        deconvolve_file(ckpt, str(tmp_path / "*.cov.gz"), tmp_path / "o.csv")
    reads = tmp_path / "r.pt"
    save_checkpoint(ReadAwareNNLSModel(atlas).checkpoint(), reads)
    # one covered region is read (no fixed floor), but only if it is a marker of some type
    from deconflow.read_evidence import marker_regions

    markers = marker_regions(atlas.to_numpy())
    plain = int(np.flatnonzero(~markers.any(axis=1))[0])
    start = int(atlas.index[plain].split(":")[1].split("-")[0])
    lonely = tmp_path / "lonely.cov"
    write_calls(lonely, ["chr1"], [start + 1], [1], [2], "bismark")
    with pytest.raises(DeconflowError, match="calls on 1 atlas regions, but none .* is a marker region of any atlas cell type"):
        deconvolve_file(reads, lonely, tmp_path / "o.csv", min_overlap=10)
    twin = tmp_path / "sub" / "s.cov"
    twin.parent.mkdir()
    write_calls(twin, ["chr1"], [1000], [1], [2], "bismark")
    with pytest.raises(DeconflowError, match="sample id 's'"):
        deconvolve_file(reads, [path, twin], tmp_path / "o.csv", min_overlap=1)
    assert not (tmp_path / "o.csv").exists()
