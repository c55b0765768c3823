"""deconflow.benchmarks.rule_times: per-rule sums of snakemake benchmark files."""

import math

from deconflow.benchmarks.rule_times import by_rule, main, read_benchmarks

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(path, wall, cpu):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:01\t1\t1\t1\t1\t0\t0\t0\t{cpu}\n")


def test_sums_jobs_per_rule(tmp_path, capsys):
    _bench(tmp_path / "pbmc" / "train_model" / "hpvade.tsv", 100.5, 90.0)
    _bench(tmp_path / "cfdna" / "train_model" / "sparse.tsv", 20.0, 15.5)
    _bench(tmp_path / "pbmc" / "build_signature.tsv", 2.0, 1.0)
    _bench(tmp_path / "pbmc" / "deconvolve_bulk" / "daism" / "nnls.tsv", 3.0, "NA")
    jobs = read_benchmarks(tmp_path)
    assert jobs["pbmc/train_model/hpvade"] == (100.5, 90.0)
    assert math.isnan(jobs["pbmc/deconvolve_bulk/daism/nnls"][1])
    rules = by_rule(jobs)
    assert rules["train_model"] == (2, 120.5, 105.5)
    assert rules["build_signature"] == (1, 2.0, 1.0)
    assert main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| train_model | 2 | 120.5 | 105.5 |" in printed
    assert "4 jobs, wall 126 s" in printed
