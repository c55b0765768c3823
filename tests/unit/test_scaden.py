import numpy as np
import torch

from deconflow.models import load_model, save_checkpoint
from deconflow.models.scaden import make_learner, scaden_transform
from deconflow.training import resolve_settings, train_learner

from learned_fixtures import TINY_SCADEN, synthetic


def test_transform_is_log2_then_per_sample_min_max():
    x = torch.tensor([[0.0, 1.0, 3.0], [7.0, 15.0, 1.0]])
    out = scaden_transform(x)
    expected = torch.log2(x + 1)
    expected = (expected - expected.min(1, keepdim=True).values) / (expected.max(1, keepdim=True).values - expected.min(1, keepdim=True).values)
    torch.testing.assert_close(out, expected)
    assert torch.equal(out.min(1).values, torch.zeros(2)) and torch.equal(out.max(1).values, torch.ones(2))


def test_three_members_and_proportions_sum_to_one():
    train, val, signature, context = synthetic()
    torch.manual_seed(0)
    learner = make_learner(train, signature, resolve_settings("scaden", TINY_SCADEN), context)
    assert len(learner.module.members) == 3 and len(learner.loss_weights) == 3
    p = learner.predict(torch.from_numpy(val.features))
    assert p.shape == (len(val.features), 3)
    assert torch.allclose(p.sum(1), torch.ones(len(p)), atol=1e-5)


def test_training_lowers_loss_and_checkpoint_round_trips(tmp_path):
    train, val, signature, context = synthetic()
    model, history = train_learner("scaden", train, val, signature, {**TINY_SCADEN, "epochs": 5, "learning_rate": 3e-3}, 0)
    assert history["train_total"].iloc[-1] < history["train_total"].iloc[0]
    save_checkpoint(model.checkpoint(), tmp_path / "s.pt")
    loaded = load_model(tmp_path / "s.pt")
    np.testing.assert_array_equal(loaded.predict(val.features), model.predict(val.features))
    np.testing.assert_allclose(loaded.predict(val.features).sum(1), 1.0, atol=1e-5)


def test_a_gene_the_bulk_lacks_reads_as_its_training_mean_cpm():
    """predict_partial fills NaN genes with the training mixtures' mean CPM (not 0)."""
    train, val, signature, _ = synthetic()
    model, _ = train_learner("scaden", train, val, signature, {**TINY_SCADEN, "epochs": 1}, 0)
    fill = np.asarray(train.features, dtype=np.float64).mean(axis=0)
    np.testing.assert_allclose(model.net.missing_fill_cpm.numpy(), fill, rtol=1e-5)
    partial = val.features.astype(np.float64).copy()
    partial[:, ::4] = np.nan
    filled = np.where(np.isnan(partial), fill[None, :], partial)
    np.testing.assert_allclose(model.predict_partial(partial), model.predict(filled), atol=1e-6)
    assert np.abs(model.predict_partial(partial) - model.predict(np.nan_to_num(partial))).max() > 1e-4
