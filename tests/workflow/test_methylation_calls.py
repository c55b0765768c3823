"""Per-sample methylation calls through the pipeline and through `deconflow deconvolve`.

A methylation dataset on the embedded Loyfer atlas whose `bulk` is a glob of Bismark `.cov.gz`
files plus a MethylDackel bedGraph (a list), made from reads simulated on atlas regions: the
pipeline's proportions equal the CLI's for the same files, and, for nnls_reads, the in-memory
path of the simulated reads (the evaluation path).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from wfutil import project_copy, run_env, snakemake

pytestmark = pytest.mark.workflow

ATLAS = "resources/loyfer2023/atlas.tsv"


def test_call_files_through_pipeline_and_cli(tmp_path, embedded_resources):
    from deconflow.methylation import MethylationSimSettings, read_atlas, simulate_methylation
    from deconflow.io.methylation_calls import calls_from_region_counts, parse_region_ids, write_calls
    from deconflow.models.nnls_reads import ReadAwareNNLSModel

    work = project_copy(tmp_path, embedded_resources)
    atlas = read_atlas(work / ATLAS)
    sim = simulate_methylation(atlas, MethylationSimSettings(n_mixtures=3, logit_sd=1.0, depth_range=(1.0, 10.0)), seed=4)
    methylated = np.rint(np.nan_to_num(sim["features"]) * sim["coverage"]).astype(np.int64)
    regions = parse_region_ids(atlas.index)
    rng = np.random.default_rng(2)
    names = ["plasma_a.cov.gz", "plasma_b.cov.gz", "plasma_c_CpG.bedGraph"]
    for i, name in enumerate(names):
        chrom, position, m, t = calls_from_region_counts(regions, methylated[i], sim["coverage"][i], rng)
        write_calls(work / "calls" / name, chrom, position, m, t, "methyldackel" if name.endswith("bedGraph") else "bismark")
    config = {
        "seed": 1,
        "datasets": {"mycfdna": {"modality": "methylation", "atlas": ATLAS, "models": ["nnls", "nnls_reads"],
                                 "bulk": ["calls/*.cov.gz", "calls/plasma_c_CpG.bedGraph"]}},
        "pseudobulk": {"n_train": 4, "n_val": 4, "n_test": 8},
    }
    (work / "calls" / "config.yaml").write_text(yaml.safe_dump(config))
    outputs = [f"results/mycfdna/deconvolution/bulk/{model}/proportions.csv" for model in ("nnls", "nnls_reads")]
    snakemake(work, *outputs, "--configfile", "calls/config.yaml")

    pipeline = {model: pd.read_csv(work / out, index_col=0) for model, out in zip(("nnls", "nnls_reads"), outputs)}
    assert list(pipeline["nnls_reads"].index) == ["plasma_a", "plasma_b", "plasma_c"]
    log = (work / "logs/mycfdna/deconvolve_bulk/bulk/nnls_reads.log").read_text()
    assert "calls/plasma_a.cov.gz: calls on" in log
    expected = ReadAwareNNLSModel(atlas).predict_with_coverage(sim["features"], sim["coverage"])
    np.testing.assert_allclose(pipeline["nnls_reads"].to_numpy(), expected, atol=1e-6)  # CSV: 8 significant digits
    for model in ("nnls", "nnls_reads"):
        cli = subprocess.run(
            [sys.executable, "-m", "deconflow.cli", "deconvolve", "--model", f"results/mycfdna/models/{model}/checkpoint_best.pt",
             "--bulk", "calls/plasma_a.cov.gz", "calls/plasma_b.cov.gz", "calls/plasma_c_CpG.bedGraph", "--out", f"cli_{model}/p.csv"],
            cwd=work, env=run_env(work), capture_output=True, text=True, timeout=300,
        )
        assert cli.returncode == 0, cli.stderr
        assert (work / f"cli_{model}/p.csv").read_bytes() == (work / outputs[("nnls", "nnls_reads").index(model)]).read_bytes()
        rule_folder = work / outputs[("nnls", "nnls_reads").index(model)]
        for name in ("tissues.csv", "detection.csv"):  # the read test's tables: the same bytes too
            assert (work / f"cli_{model}" / name).read_bytes() == rule_folder.with_name(name).read_bytes(), name
