import numpy as np
import pytest
import torch

from deconflow.errors import DeconflowError
from deconflow.models import load_model, save_checkpoint
from deconflow.models import nnls
from deconflow.models.hpvade import blend, build_net, make_learner
from deconflow.training import TRAINER_DEFAULTS, resolve_settings, train_learner

from learned_fixtures import TINY_HPVADE, synthetic


def settings(**extra):
    return resolve_settings("hpvade", {**TINY_HPVADE, **extra})


def test_shapes_and_proportions_sum_to_one():
    train, val, signature, context = synthetic()
    torch.manual_seed(0)
    learner = make_learner(train, signature, settings(), context)
    p = learner.predict(torch.from_numpy(val.features))
    assert p.shape == (len(val.features), 3)
    assert torch.allclose(p.sum(dim=1), torch.ones(len(p)), atol=1e-5)
    assert bool((p >= 0).all())
    terms = learner.loss_terms({"features": torch.from_numpy(train.features[:8]), "proportions": torch.from_numpy(train.proportions[:8]).float(),
                                "cells": learner.aux_train["cells"][:8], "cell_labels": learner.aux_train["cell_labels"][:8]})
    assert set(terms) == {"bulk_recon", "bulk", "cell_recon", "kl", "proto"}
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())


def test_signature_initialisation_copies_the_given_matrix(caplog):
    train, _, signature, _ = synthetic()
    with caplog.at_level("INFO"):
        net = build_net(train.features, signature, settings())
    assert "initialising signature matrix from cell type means" in caplog.text
    np.testing.assert_allclose(net.signature_cpm().detach().numpy(), signature.to_numpy(), rtol=1e-4, atol=1e-3)


def test_missing_signature_is_refused():
    train, _, signature, context = synthetic()
    with pytest.raises(DeconflowError, match="signature"):
        make_learner(train, signature.iloc[:0], settings(), context)


def test_signature_stays_non_negative_and_training_lowers_the_loss():
    train, val, signature, context = synthetic()
    model, history = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 6, "patience": 10,
                                                                      "lambda_bulk_recon": 1e3, "learning_rate": 3e-3}, 0, context=context)
    assert history["train_total"].iloc[-1] < history["train_total"].iloc[0]
    assert history["val_bulk"].iloc[-1] < history["val_bulk"].iloc[0]
    assert (model.signature_cpm().to_numpy() >= 0).all()
    pred = model.predict(val.features)
    np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-5)


def test_checkpoint_round_trip_predicts_identically(tmp_path):
    train, val, signature, context = synthetic()
    model, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2}, 0, context=context)
    save_checkpoint(model.checkpoint({"note": "test"}), tmp_path / "ckpt.pt")
    loaded = load_model(tmp_path / "ckpt.pt")
    assert loaded.name == "hpvade" and list(loaded.cell_types) == list(signature.columns)
    np.testing.assert_array_equal(loaded.predict(val.features), model.predict(val.features))


def test_defaults_have_the_issue_loss_weights():
    s = resolve_settings("hpvade", {})
    assert (s["lambda_proto"], s["lambda_bulk_recon"], s["lambda_bulk"], s["lambda_kl"]) == (0.1, 10.0, 5.0, 0.01)
    assert set(TRAINER_DEFAULTS) <= set(s)


def test_signature_prior_is_the_nnls_solution_of_the_initial_signature():
    """The batched torch NNLS of the prior equals scipy's NNLS baseline on noise-free mixtures."""
    from deconflow.models.nnls import NNLSModel

    train, _, signature, _ = synthetic()
    rng = np.random.default_rng(3)
    props = rng.dirichlet(np.ones(3), size=20)
    props[:5, 0] = 0  # some absent types
    props /= props.sum(axis=1, keepdims=True)
    mixtures = (props @ signature.to_numpy().T).astype(np.float32)
    net = build_net(train.features, signature, settings(prior_iterations=3000))
    prior = net.nnls_prior(torch.from_numpy(mixtures)).double().numpy()
    np.testing.assert_allclose(prior, props, atol=2e-3)
    np.testing.assert_allclose(prior, NNLSModel(signature).predict(mixtures), atol=2e-3)


def test_blend_coefficients_pick_per_type_whichever_source_is_right():
    from deconflow.models.hpvade import blend, fit_blend_weights

    rng = np.random.default_rng(0)
    truth = torch.from_numpy(rng.dirichlet(np.ones(4), size=200))
    noise = torch.from_numpy(rng.dirichlet(np.ones(4), size=200))
    p_net = truth.clone()
    p_net[:, 0] = noise[:, 0]  # the encoder is wrong about type 0 only
    p_net = p_net / p_net.sum(dim=1, keepdim=True)
    p_nnls = truth.clone()
    p_nnls[:, 0] *= 0.5  # NNLS finds type 0 but at half its level (like ILC on PBMC)
    p_nnls = p_nnls / p_nnls.sum(dim=1, keepdim=True)
    coef_net, coef_nnls = fit_blend_weights(p_net, p_nnls, truth)
    assert coef_net[0] == 0 and coef_nnls[0] > 1  # type 0: NNLS only, scaled up
    mse = lambda p: float((p - truth).pow(2).mean())  # noqa: E731
    combined = blend(p_net, p_nnls, coef_net.double(), coef_nnls.double())
    assert mse(combined) < 0.2 * min(mse(p_net), mse(p_nnls))
    torch.testing.assert_close(combined.sum(dim=1), torch.ones(200, dtype=torch.float64))


def test_trained_model_carries_its_validation_blend_coefficients(tmp_path):
    train, val, signature, context = synthetic()
    model, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2}, 0, context=context)
    coef = torch.stack([model.net.blend_net, model.net.blend_nnls])
    assert coef.shape == (2, 3) and bool(((coef >= 0) & (coef <= 2)).all())
    save_checkpoint(model.checkpoint({}), tmp_path / "ckpt.pt")
    loaded = load_model(tmp_path / "ckpt.pt")
    torch.testing.assert_close(torch.stack([loaded.net.blend_net, loaded.net.blend_nnls]), coef)
    np.testing.assert_array_equal(loaded.predict(val.features), model.predict(val.features))
    plain, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2, "nnls_blend": False}, 0, context=context)
    assert plain.net.prior_signature.numel() == 0 and bool((plain.net.blend_nnls == 0).all())


def test_without_the_all_gene_prior_the_output_is_the_two_source_stacking():
    train, val, signature, context = synthetic()
    model, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2, "all_gene_prior": False}, 0,
                             context=context)
    net = model.net
    assert bool((net.blend_plain == 0).all())
    x = torch.from_numpy(val.features.astype(np.float32))
    with torch.no_grad():
        expected = blend(torch.softmax(net.proportion_logits(x), dim=1), net.nnls_prior(x), net.blend_net, net.blend_nnls)
    torch.testing.assert_close(torch.from_numpy(model.predict(val.features)).float(), expected.float())
    with_all, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2, "all_gene_prior": True}, 0,
                                context=context)
    coef_all = torch.stack([with_all.net.blend_net, with_all.net.blend_nnls, with_all.net.blend_plain])
    assert bool(((coef_all >= 0) & (coef_all <= 2)).all())


def test_a_gene_the_bulk_lacks_enters_the_encoder_at_its_training_mean():
    train, val, signature, _ = synthetic()
    net = build_net(train.features, signature, settings()).eval()
    x = torch.from_numpy(val.features[:8].astype(np.float32))
    partial = x.clone()
    partial[:, ::5] = float("nan")
    at_mean = torch.where(torch.isnan(partial), torch.expm1(net.input_mean).expand_as(x), partial)  # z = 0
    torch.testing.assert_close(net.proportion_logits(partial), net.proportion_logits(at_mean))
    assert not torch.allclose(net.proportion_logits(partial), net.proportion_logits(torch.nan_to_num(partial)))
    p = net.proportions(partial)
    assert bool(torch.isfinite(p).all()) and torch.allclose(p.sum(1), torch.ones(8))


def test_augmentation_is_one_gene_factor_shared_by_the_batch_then_cpm():
    from deconflow.models.hpvade import augment

    train, _, _, _ = synthetic()
    x = torch.from_numpy(train.features[:16].astype(np.float64))
    out = augment(x, 1.0, 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.sum(1), torch.full((16,), 1e6, dtype=torch.float64))
    log_ratio = torch.log(out / x)  # log f_g + per-sample constant
    centred = log_ratio - log_ratio[0]
    torch.testing.assert_close(centred, centred[:, :1].expand_as(centred))  # same factor for every sample
    assert float(log_ratio[0].std()) > 0.5
    hidden = augment(x, 0.0, 0.3, torch.Generator().manual_seed(1))
    missing_genes = torch.isnan(hidden).all(0)
    assert bool((torch.isnan(hidden).any(0) == missing_genes).all()) and 0.1 < float(missing_genes.float().mean()) < 0.5
    torch.testing.assert_close(hidden[:, ~missing_genes], x[:, ~missing_genes])


def test_three_source_blend_is_a_local_optimum_of_its_own_mse():
    """The fast per-type scoring in fit_blend_weights must agree with blend() itself: no single
    type's coefficient triple on the grid gives a lower MSE than the fitted coefficients."""
    from deconflow.models.hpvade import BLEND_GRID, BLEND_MAX, blend, fit_blend_weights

    rng = np.random.default_rng(4)
    truth = torch.from_numpy(rng.dirichlet(np.ones(4), size=150))
    sources = [torch.from_numpy(rng.dirichlet(np.ones(4), size=150)) * 0.5 + truth * 0.5 for _ in range(3)]
    coefs = torch.stack([c.double() for c in fit_blend_weights(*sources[:2], truth, sources[2])])
    priors = torch.stack(sources[1:])

    def mse(c):
        return float((blend(sources[0], priors, c[0], c[1:, None, :]) - truth).pow(2).mean())

    fitted = mse(coefs)
    assert fitted < min(float((s - truth).pow(2).mean()) for s in sources)
    grid = torch.linspace(0, BLEND_MAX, BLEND_GRID, dtype=torch.float64)
    for k in range(4):
        for _ in range(30):
            trial = coefs.clone()
            trial[:, k] = grid[torch.from_numpy(rng.integers(0, BLEND_GRID, size=3))]
            assert mse(trial) >= fitted - 1e-12


def test_samples_further_from_the_signature_than_any_validation_mixture_get_the_linear_fit_prior(tmp_path):
    """The threshold is ``ood_margin`` times the largest relative residual of the all-gene fit over
    the validation mixtures: those keep the stacking; a bulk of another platform (every gene scaled by its own
    strong factor) is beyond it and gets the linear-fit prior alone; ``ood_fallback: false``
    never falls back. The threshold travels with the checkpoint."""
    train, val, signature, context = synthetic()
    model, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2}, 0, context=context)
    net = model.net
    x_val = torch.from_numpy(val.features.astype(np.float32))
    with torch.no_grad():
        _, residual = net.plain_fit(x_val)
        stacking = blend(torch.softmax(net.proportion_logits(x_val), dim=1), torch.stack([net.nnls_prior(x_val), net.plain_prior(x_val)]),
                         net.blend_net, torch.stack([net.blend_nnls, net.blend_plain])[:, None, :])
    assert float(net.fallback_residual) == pytest.approx(TINY_HPVADE.get("ood_margin", 1.5) * float(residual.max()), rel=1e-6)
    torch.testing.assert_close(torch.from_numpy(model.predict(val.features)).float(), stacking.float())
    factors = np.exp(2.0 * np.random.default_rng(1).standard_normal(val.features.shape[1]))
    shifted = val.features[:8] * factors
    shifted = (shifted / shifted.sum(axis=1, keepdims=True) * 1e6).astype(np.float32)
    x_far = torch.from_numpy(shifted)
    assert bool(net.off_distribution(x_far).all())
    with torch.no_grad():
        prior = net.nnls_prior(x_far)
    # the prior solved exactly: the nnls model of the same signature and linear-fit designs
    signature.attrs["cell_library_size"] = net.prior_library_size.numpy()
    exact = nnls.fit(train, val, signature, {"linear_fit": settings()["linear_fit"]}).predict_partial(shifted)
    np.testing.assert_allclose(model.predict_partial(shifted), exact, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(model.predict_partial(shifted)).float(), prior.float(), atol=2e-2, rtol=0)
    save_checkpoint(model.checkpoint({}), tmp_path / "ckpt.pt")
    np.testing.assert_array_equal(load_model(tmp_path / "ckpt.pt").predict(shifted), model.predict(shifted))
    off, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2, "ood_fallback": False}, 0, context=context)
    assert not bool(torch.isfinite(off.net.fallback_residual)) and not bool(off.net.off_distribution(x_far).any())


def test_trust_hooks_cross_fitted_estimates_residual_and_fallback_rows():
    """For calibrating intervals: the cross-fitted validation estimates are proportions close to
    (not equal to: the stacking is refitted per fold) the model's own; the relative residual is
    the all-gene fit's, and fallback rows are exactly the off-distribution samples."""
    train, val, signature, context = synthetic()
    model, _ = train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2}, 0, context=context)
    held_out = model.held_out_estimates(val.features, val.proportions)
    own = model.predict(val.features)
    np.testing.assert_allclose(held_out.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(held_out - own).mean() < 0.1
    with torch.no_grad():
        _, residual = model.net.plain_fit(torch.from_numpy(val.features.astype(np.float32)))
    np.testing.assert_allclose(model.relative_residual(val.features), residual.numpy(), rtol=1e-6)
    factors = np.exp(2.0 * np.random.default_rng(1).standard_normal(val.features.shape[1]))
    far = np.vstack([val.features[:4], val.features[4:8] * factors])
    assert model.fallback_rows(far).tolist() == [False] * 4 + [True] * 4
