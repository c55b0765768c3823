"""Peers (Rectangle, dtangle) in a run: their own venvs built by the workflow, rows of every
comparison, units, and what touching a pin file reruns.

The peers' environments are built once per test session in one shared folder (or in
$DECONFLOW_TEST_PEER_ENVS, to reuse them across sessions while developing) and used by every test.
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import yaml

from wfutil import project_copy, scheduled_jobs, snakemake

pytestmark = pytest.mark.workflow

PEERS = ["rectangle", "dtangle"]


@pytest.fixture(scope="session")
def peer_env_dir(tmp_path_factory):
    shared = os.environ.get("DECONFLOW_TEST_PEER_ENVS")
    if shared:
        Path(shared).mkdir(parents=True, exist_ok=True)
        return Path(shared)
    return tmp_path_factory.mktemp("peer-envs")


#: Rectangle's signature with fewer bootstrap pseudobulks per type and without the cutoff grid
#: search (its DESeq2 runs dominate the test's time); the default run uses Rectangle's defaults
FAST_RECTANGLE = {"rectangle": {"optimize_cutoffs": False, "advanced_parameters": {"number_of_bootstraps": 5}}}


def peer_config(work, peer_env_dir, settings=FAST_RECTANGLE, name="peers.yaml"):
    """config/test.yaml plus a second config file with the peers (nested values keep their types
    in a file; `--config` would turn them into strings). nnls only: the peers are what is tested
    here (the models have their own tiny run)."""
    extra = {"models": ["nnls"], "peers": PEERS, "peer_env_dir": str(peer_env_dir), "peer_settings": settings}
    (work / name).write_text(yaml.safe_dump(extra))
    return ["--configfile", "config/test.yaml", name]


@pytest.fixture(scope="session")
def peer_run(tmp_path_factory, embedded_resources, peer_env_dir):
    """config/test.yaml with both peers (and nnls), environments built by the peer_env rule."""
    work = project_copy(tmp_path_factory.mktemp("peer-run"), embedded_resources)
    # the first run of a session builds both environments (network; 1-3 min)
    proc = snakemake(work, *peer_config(work, peer_env_dir), timeout=2400)
    return work, proc


def test_peers_are_rows_of_every_comparison_marked_as_peers(peer_run, peer_env_dir):
    work, _ = peer_run
    results = work / "results" / "tiny"
    for table in (results / "evaluation" / "comparison.csv", results / "bulk_evaluation" / "daism" / "comparison.csv"):
        comparison = pd.read_csv(table)
        assert comparison["model"].tolist() == ["nnls", *PEERS]
        assert comparison["kind"].tolist() == ["model", "peer", "peer"]
        assert np.isfinite(comparison[["mean_r", "ccc", "mae"]].to_numpy()).all()
    for peer in PEERS:
        for plot in ("miami.png", "scatter.png"):
            assert (results / "plots" / peer / plot).stat().st_size > 0
            assert (results / "plots" / "bulk_daism" / peer / plot).stat().st_size > 0
        # each peer in its own venv, in the shared folder; deconflow's own environment has neither
        assert (peer_env_dir / peer / "venv" / "bin" / "python").exists()
        assert not (work / ".peers").exists()
    assert importlib.util.find_spec("rectanglepy") is None and importlib.util.find_spec("dtangle") is None
    # Rectangle's signature is built once per dataset and serves the test mixtures and both bulks
    assert len(list((results / "peers").rglob("signature.pkl"))) == 1


def test_peer_proportions_are_cell_fractions_in_our_columns(peer_run):
    work, _ = peer_run
    results = work / "results" / "tiny"
    cell_types = pd.read_csv(results / "signature" / "cell_library_size.tsv", sep="\t", index_col=0).index.tolist()
    for peer in PEERS:
        for bulk, n_samples in (("finotello", 3), ("daism", 20)):
            props = pd.read_csv(results / "deconvolution" / bulk / peer / "proportions.csv", index_col=0)
            assert props.columns.tolist() == cell_types and len(props) == n_samples
            assert (props.to_numpy() >= 0).all()
            np.testing.assert_allclose(props.sum(axis=1), 1.0, atol=1e-6)
        summary = pd.read_csv(results / "evaluation" / peer / "summary_stats.csv")
        assert summary["cell_type"].unique().tolist() == cell_types
        # on held-out pseudobulk a working peer is far better than a flat guess
        metrics = json.loads((results / "evaluation" / peer / "metrics.json").read_text())
        assert metrics["mean_r"] > 0.5, (peer, metrics["mean_r"])
    raw = pd.read_csv(results / "peers" / "rectangle" / "raw" / "bulk_daism.csv", index_col=0)
    assert "Unknown" in raw.columns  # Rectangle's own column, dropped on our side
    assert "Unknown" in (work / "logs" / "tiny" / "peer_proportions" / "daism" / "rectangle.log").read_text()


def test_dtangle_on_a_noise_free_mixture_gives_cell_fractions(peer_run, peer_env_dir, embedded_resources, tmp_path):
    """run_peer (the library entry point) on exact mixtures of the reference's mean profiles: the
    output has the reference's types as columns and is in cell units (not dtangle's mRNA shares)."""
    import anndata as ad

    from deconflow.peers import run_peer
    from deconflow.signature import cell_type_library_size, cell_type_mean_cpm

    reference = ad.read_h5ad(embedded_resources / "pbmc" / "reference.h5ad")
    labels = reference.obs["cell_type"].astype(str).to_numpy()
    types = sorted(set(labels))
    profiles = cell_type_mean_cpm(reference.X, labels, reference.var_names, types)
    sizes = cell_type_library_size(reference.X, labels, types).to_numpy()
    mixes = [{"Monocytes": 0.5, "T cells CD4 conv": 0.5}, {"Monocytes": 0.2, "B cells": 0.3, "NK cells": 0.5},
             {"T cells CD8": 0.6, "Monocytes": 0.4},
             {"Plasma cells": 0.5, "Platelet": 0.5}]  # 11x apart in UMIs per cell: units matter most
    cells = np.zeros((len(mixes), len(types)))
    for row, mix in enumerate(mixes):
        for name, share in mix.items():
            cells[row, types.index(name)] = share
    mrna = cells * sizes / (cells * sizes).sum(axis=1, keepdims=True)
    samples = [f"m{i + 1}" for i in range(len(mixes))]
    bulk = pd.DataFrame(profiles.to_numpy() @ (cells * sizes).T, index=profiles.index, columns=samples)
    out = run_peer("dtangle", reference, bulk, tmp_path / "dtangle.csv", env_dir=peer_env_dir, work_dir=tmp_path / "work")
    assert out.columns.tolist() == types and out.index.tolist() == samples
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-9)
    assert pd.read_csv(tmp_path / "dtangle.csv", index_col=0).shape == (len(mixes), len(types))
    # units: dtangle's own output (mRNA shares) divided by the reference's UMIs per cell, renormalised
    raw = pd.read_csv(tmp_path / "work" / "raw.csv", index_col=0)[types].to_numpy() / sizes
    np.testing.assert_allclose(out.to_numpy(), raw / raw.sum(axis=1, keepdims=True), rtol=1e-6)
    # where the units differ most (plasma cells vs platelets, 1:1 in cells, 11:1 in mRNA) the ratio
    # of the two is the cells' (dtangle's unconverted output has about the mRNA ratio)
    plasma, platelet = types.index("Plasma cells"), types.index("Platelet")
    ratio = out.to_numpy()[3, plasma] / out.to_numpy()[3, platelet]
    mrna_ratio = mrna[3, plasma] / mrna[3, platelet]
    assert abs(np.log(ratio)) < abs(np.log(ratio / mrna_ratio)), (ratio, mrna_ratio)
    # dtangle is not exact even without noise (its markers are not perfectly specific, and its
    # gamma bends the log ratios), but in the blood-like mixtures the mixed types carry most of the
    # mass and the largest is found where there is one
    assert (out.to_numpy() * (cells > 0))[:3].sum(axis=1).min() > 0.5
    assert [types[k] for k in out.to_numpy()[1:3].argmax(axis=1)] == ["NK cells", "T cells CD8"]


def test_touching_a_pin_file_reruns_that_peer_and_the_comparisons_only(peer_run, peer_env_dir):
    work, _ = peer_run
    pins = work / "envs" / "peers" / "dtangle.txt"
    before = pins.stat()
    try:
        future = (peer_env_dir / "dtangle" / "installed.txt").stat().st_mtime + 10
        os.utime(pins, (future, future))
        jobs = scheduled_jobs(snakemake(work, *peer_config(work, peer_env_dir), "-n").stdout)
    finally:
        os.utime(pins, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert jobs == {
        "peer_env": 1,
        "peer_deconvolve": 3,  # test mixtures + 2 bulks, dtangle only
        "evaluate_peer": 1,
        "peer_proportions": 2,
        "evaluate_bulk": 1,
        "plot_model": 1,
        "plot_bulk_model": 1,
        "compare_models": 1,
        "compare_bulk_models": 1,
        "all": 1,
    }, jobs


def test_a_failing_peer_fails_its_own_job_with_one_line(peer_run, peer_env_dir):
    """A bad setting makes Rectangle's deconvolution raise: its job fails with one line naming the
    peer, the input and the log; with --keep-going dtangle's and the models' outputs are made."""
    work, _ = peer_run
    proc = snakemake(work, *peer_config(work, peer_env_dir, {"rectangle": {"no_such_setting": 1}}, "bad.yaml"),
                     "--keep-going", check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    line = next(line for line in output.splitlines() if line.startswith("peer rectangle failed"))
    assert "no_such_setting" in line and "results/tiny/peers/inputs/reference.h5ad" in line
    assert "logs/tiny/peer_signature/rectangle.log" in line
    assert not (work / "results" / "tiny" / "peers" / "rectangle" / "signature.pkl").exists()  # no partial output
