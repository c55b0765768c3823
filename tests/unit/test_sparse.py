"""The two-stage sparse model: mask, labels, loss, NNLS layer, tiny training on betas and CPM."""

import numpy as np
import pandas as pd
import pytest
import torch

from deconflow.io import MixtureSet
from deconflow.methylation import MethylationSimSettings, simulate_methylation
from deconflow.models import is_learned, load_model, save_checkpoint
from deconflow.models.nnls import batched_nnls
from deconflow.models.sparse import DEFAULTS, masked_proportions, presence_labels, sparse_loss_terms
from deconflow.models.nnls import nnls_proportions
from deconflow.training import TRAINER_DEFAULTS, train_learner

from learned_fixtures import synthetic
from test_methylation import BLOOD, make_atlas

SETTINGS = {"epochs": 8, "patience": 8, "hidden_sizes": [32], "batch_size": 32, "tensorboard": False, "learning_rate": 3e-3}


def test_registered_as_learned():
    assert is_learned("sparse")


def test_hard_mask_makes_absent_types_exactly_zero():
    presence_logits = torch.tensor([[3.0, -2.0, 0.5, -0.1], [-5.0, -4.0, -3.0, -6.0]])
    proportion_logits = torch.tensor([[0.1, 5.0, 0.2, 1.0], [0.0, 0.0, 0.0, 0.0]])
    p = masked_proportions(presence_logits, proportion_logits, threshold=0.5)
    assert p[0, 1] == 0 and p[0, 3] == 0  # σ < 0.5: exactly 0 even with the largest logit
    assert p[0, 0] > 0 and p[0, 2] > 0
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2))
    # no type passes: the most probable one is kept, alone
    assert p[1, 2] == 1 and (p[1, [0, 1, 3]] == 0).all()
    # a higher threshold removes more types
    assert (masked_proportions(presence_logits, proportion_logits, threshold=0.9)[0] > 0).sum() == 1


@pytest.mark.parametrize("relaxation", ["soft", "straight_through"])
def test_relaxations_are_differentiable_and_normalised(relaxation):
    presence_logits = torch.randn(5, 4, requires_grad=True)
    proportion_logits = torch.randn(5, 4, requires_grad=True)
    p = masked_proportions(presence_logits, proportion_logits, 0.5, relaxation)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(5))
    (p[:, 0] ** 2).sum().backward()
    assert presence_logits.grad.abs().sum() > 0 and proportion_logits.grad.abs().sum() > 0


def test_presence_labels_use_the_one_percent_threshold():
    true = torch.tensor([[0.0, 0.009, 0.01, 0.981]])
    assert presence_labels(true).tolist() == [[0.0, 0.0, 1.0, 1.0]]
    np.testing.assert_array_equal(presence_labels(true.numpy(), 0.005), [[0, 1, 1, 1]])
    settings = {**DEFAULTS, "presence_threshold": 0.5}
    terms = sparse_loss_terms(torch.zeros(1, 4), torch.zeros(1, 4), true, settings)
    assert set(terms) == {"mse", "presence_bce", "sparsity"}
    assert terms["sparsity"] == pytest.approx(0.5)  # σ(0): the L1 gate term


def test_batched_nnls_layer_matches_scipy_and_handles_nan():
    atlas = make_atlas(200)
    S = atlas.to_numpy()
    rng = np.random.default_rng(0)
    props = rng.dirichlet(np.ones(S.shape[1]) * 0.3, size=6)
    x = props @ S.T
    x_nan = x.copy()
    x_nan[:, ::7] = np.nan
    p, rms = batched_nnls(torch.tensor(S, dtype=torch.float64), torch.tensor(x_nan), iterations=3000, em_rounds=4)
    np.testing.assert_allclose(p.numpy(), nnls_proportions(S, x_nan), atol=2e-3)
    assert float(rms.max()) < 1e-2


def _beta_sets(n_train=400, seed=0):
    atlas = make_atlas(150)
    base = MethylationSimSettings(blood_cell_types=tuple(BLOOD), max_blood_present=3, max_present=4)
    sets = {}
    for i, (name, n) in enumerate([("train", n_train), ("val", 100), ("test", 100)]):
        s = MethylationSimSettings(**{**base.__dict__, "n_mixtures": n, "spike_fraction": 0.2 if name == "test" else 0.0})
        sim = simulate_methylation(atlas, s, seed=seed + i)
        sets[name] = MixtureSet(sim["features"].astype(np.float32), sim["proportions"], atlas.index.to_numpy(),
                                atlas.columns.to_numpy(), np.array([f"{name}{j}" for j in range(n)]), {"normalization": "beta"})
    return atlas, sets


def test_tiny_training_on_betas_lowers_loss_and_predicts_sparse(tmp_path):
    atlas, sets = _beta_sets()
    model, history = train_learner("sparse", sets["train"], sets["val"], atlas, SETTINGS, seed=0)
    assert history["train_total"].iloc[-1] < history["train_total"].iloc[0]
    assert history["val_selection"].min() < history["val_selection"].iloc[0]
    test = sets["test"]
    for refit in (False, True):
        pred = model.predict(test.features, refit=refit)
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-6)
        assert (pred == 0).mean() > 0.3  # absent tissues are exactly 0
    # refit only uses called tissues: zeros of the gate stay zeros
    presence, network = model.heads(test.features)
    called = (presence >= model.settings["refit_presence_threshold"]) | (network > 0)
    assert (model.predict(test.features, refit=True)[~called] == 0).all()
    # checkpoint round trip gives identical predictions
    path = tmp_path / "sparse.pt"
    save_checkpoint(model.checkpoint({}), path)
    again = load_model(path)
    np.testing.assert_allclose(again.predict(test.features), model.predict(test.features))


def test_runs_on_rna_cpm():
    train, val, signature, _ = synthetic(n_genes=40, n_train=128, n_val=32)
    model, history = train_learner("sparse", train, val, signature, {**SETTINGS, "epochs": 3}, seed=1)
    pred = model.predict(val.features)
    assert pred.shape == (32, 3)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-6)
    assert model.net.inputs == "both"
    assert set(TRAINER_DEFAULTS).isdisjoint({"refit", "presence_threshold"})


def test_missing_regions_are_imputed_not_zeroed():
    atlas, sets = _beta_sets(n_train=200)
    model, _ = train_learner("sparse", sets["train"], sets["val"], atlas, {**SETTINGS, "epochs": 2}, seed=0)
    features = sets["test"].features.astype(np.float64).copy()
    features[:, ::3] = np.nan
    pred = model.predict_partial(features)
    assert np.isfinite(pred).all()
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-6)
