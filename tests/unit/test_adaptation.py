"""Adaptation of HP-VADE to the user's bulk cohort at deconvolution time (deconflow.models.adaptation)."""

import builtins
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deconflow.deconvolve import deconvolve_file
from deconflow.errors import DeconflowError
from deconflow.models import save_checkpoint
from deconflow.models.adaptation import apply_factors, cohort_genes, platform_factors
from deconflow.models.nnls import NNLSModel, nnls_proportions
from deconflow.training import train_learner

from learned_fixtures import CELL_TYPES, TINY_HPVADE, synthetic, write_files

SRC = str(Path(__file__).resolve().parents[2] / "src")


def shifted(features, genes, sd=1.5, seed=1):
    """Noise-free CPM under a platform shift: a log-normal factor on each of ``genes``, renormalised."""
    factors = np.ones(features.shape[1])
    factors[genes] = np.exp(sd * np.random.default_rng(seed).standard_normal(len(genes)))
    x = features * factors
    return x / x.sum(axis=1, keepdims=True) * 1e6, np.log(factors)


def test_noise_free_mixtures_under_a_per_gene_platform_shift_are_recovered_exactly():
    """A cohort of noise-free mixtures whose non-marker genes carry per-gene factors: the linear fit
    on the marker genes is right, the all-gene NNLS (HP-VADE's all-gene prior, unadapted) is not.
    The factors estimated from the cohort (no shrinkage, no pseudo-count) are the true ones, the
    corrected bulk is the clean mixture, and the all-gene fit of it gives the exact proportions."""
    _, _, signature, _ = synthetic(n_genes=60)
    rng = np.random.default_rng(3)
    proportions = rng.dirichlet(np.ones(3), size=12)
    clean = proportions @ signature.to_numpy().T
    clean = clean / clean.sum(axis=1, keepdims=True) * 1e6
    markers = np.arange(40)  # the linear fit's genes: unshifted
    x, true_log = shifted(clean, np.arange(40, 60))
    linear_fit = NNLSModel(signature, rows=markers)
    settings = {"shrinkage": 0.0, "pseudo_cpm": 0.0, "min_cpm": 0.0, "min_samples": 3}
    log_factors = platform_factors(linear_fit, x, settings)
    np.testing.assert_allclose(log_factors, true_log, atol=1e-6)
    np.testing.assert_allclose(apply_factors(x, log_factors), clean, rtol=1e-6)
    unadapted = nnls_proportions(signature.to_numpy(), x)
    adapted = nnls_proportions(signature.to_numpy(), apply_factors(x, log_factors))
    assert np.abs(unadapted - proportions).max() > 0.05
    np.testing.assert_allclose(adapted, proportions, atol=1e-6)
    # one sample cannot tell a factor from its composition: none are estimated
    assert not platform_factors(linear_fit, x[:1], settings).any()
    assert cohort_genes(x[:1], np.zeros(60)).all()


@pytest.fixture(scope="module")
def trained():
    train, val, signature, context = synthetic()
    model, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2}, 0, context=context)
    return model, train, val


def test_adapted_model_is_closer_to_the_truth_of_a_shifted_cohort_than_the_model_as_trained(trained):
    model, train, val = trained
    x, _ = shifted(val.features.astype(np.float64), np.arange(0, 60, 3), sd=2.0)
    x[:, 5] = np.nan  # a gene the bulk lacks
    adapted, kind, note = model.adapted(x, (train.features, train.proportions))
    assert kind == "platform" and "adapted" in note
    assert not adapted.cohort_mask[5] and adapted.cohort_mask.sum() < 60
    before = np.abs(model.predict_partial(x) - val.proportions).mean()
    after = np.abs(adapted.predict_partial(x) - val.proportions).mean()
    assert after < before
    # the checkpoint's own model is untouched
    assert model.cohort_mask is None and adapted.net is not model.net
    off, kind, _ = model.adapted(x, (train.features, train.proportions), {"enabled": False})
    assert off is model and kind == "none"
    with pytest.raises(DeconflowError, match="training mixtures"):
        model.adapted(x, None)


@pytest.fixture(scope="module")
def files(trained, tmp_path_factory):
    model, _, val = trained
    folder = tmp_path_factory.mktemp("adapt")
    paths, _ = write_files(folder)  # the same synthetic train mixtures (seeded)
    save_checkpoint(model.checkpoint({}), folder / "ckpt.pt")
    x, _ = shifted(val.features[:20].astype(np.float64), np.arange(0, 60, 3), sd=2.0)
    bulk = pd.DataFrame(x.T, index=pd.Index(val.feature_names, name="gene"), columns=[f"s{i}" for i in range(len(x))])
    bulk.to_csv(folder / "bulk.tsv", sep="\t")
    bulk.iloc[:, :1].to_csv(folder / "one.tsv", sep="\t")
    truth = pd.DataFrame(val.proportions[:20], index=bulk.columns, columns=CELL_TYPES)
    truth.to_csv(folder / "truth.tsv", sep="\t")
    return folder, paths["train"]


def _deconvolve(folder, train, bulk, out, **extra):
    return deconvolve_file(folder / "ckpt.pt", folder / bulk, folder / out / "proportions.csv", min_overlap=10, qc=True,
                           mixtures=train, **extra)


def test_a_one_sample_bulk_is_adapted_to_its_genes_only_and_says_so(files):
    folder, train = files
    table = _deconvolve(folder, train, "one.tsv", "one")
    assert table.shape == (1, 3) and np.isfinite(table.to_numpy()).all()
    np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-9)
    qc = pd.read_csv(folder / "one" / "qc.csv")
    assert qc["adaptation"].tolist() == ["genes_only"]
    whole = _deconvolve(folder, train, "bulk.tsv", "whole")
    assert set(pd.read_csv(folder / "whole" / "qc.csv")["adaptation"]) == {"platform"}
    off = _deconvolve(folder, train, "bulk.tsv", "off", adapt=False)
    assert set(pd.read_csv(folder / "off" / "qc.csv")["adaptation"]) == {"none"}
    assert not np.allclose(whole.to_numpy(), off.to_numpy())


def test_no_truth_file_is_opened(files, monkeypatch):
    """A truth table lies beside the bulk; adaptation reads the bulk, the checkpoint and the
    training mixtures only."""
    folder, train = files
    opened = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    import deconflow.truth

    def refuse(*args, **kwargs):
        raise AssertionError("truth read during deconvolution")

    monkeypatch.setattr(deconflow.truth, "read_truth", refuse)
    _deconvolve(folder, train, "bulk.tsv", "truthless")
    assert any("bulk.tsv" in path for path in opened)
    assert not any("truth" in Path(path).name for path in opened)


def test_same_bytes_at_one_and_two_threads(files):
    """``deconflow deconvolve`` with adaptation, run at 1 and 2 threads (environment and torch):
    the proportions and qc files are the same bytes."""
    folder, train = files
    outputs = []
    for threads in ("1", "2"):
        out = folder / f"threads{threads}" / "proportions.csv"
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONPATH": SRC}
        subprocess.run([sys.executable, "-m", "deconflow.cli", "deconvolve", "--model", str(folder / "ckpt.pt"),
                        "--bulk", str(folder / "bulk.tsv"), "--out", str(out), "--qc", "--min-overlap", "10",
                        "--gene-table", "", "--mixtures", str(train)], check=True, env=env, capture_output=True)
        outputs.append((out.read_bytes(), out.with_name("qc.csv").read_bytes()))
    assert outputs[0] == outputs[1]
    assert b"platform" in outputs[0][1]


def test_missing_training_mixtures_are_one_error_line_with_the_fix(files):
    folder, _ = files
    with pytest.raises(DeconflowError, match="--no-adapt"):
        _deconvolve(folder, None, "bulk.tsv", "nomix")
    assert not (folder / "nomix" / "proportions.csv").exists()
