"""Adaptation to the user's own bulk cohort at deconvolution time (RNA; no truth is read).

A model fitted on pseudobulk of a single-cell reference meets real bulk of another protocol
(full-length RNA-seq, raw counts of long genes, another lab, a gene set half the reference's).
Two differences can be learned from the bulk itself, without its truth:

- **the genes it lacks**: a learned encoder trained on every gene reads a missing gene at its
  training mean, an input it never saw in training (on the real PBMC cohorts 25-50 % of the
  model's genes are missing). Known from one sample.
- **a per-gene platform factor** shared by every sample: bulk CPM_ig ≈ f_g · Σ_k p_ik S_gk (gene
  length, 3' bias, capture, the reference's dropout). One sample cannot tell it from its
  composition (any f_g absorbs any residual); a cohort can, since f_g is the same in every sample.

:func:`platform_factors` estimates log f_g from the cohort:

1. the linear fit (``NNLSModel``: marker-set ensemble, gene weights, bulk-gene cap) gives each
   sample's mRNA shares m_i on the bulk as it is; its reconstruction r_ig = Σ_k m_ik S_gk (CPM);
2. per sample and gene the log ratio d_ig = log(x_ig + c) - log(r_ig + c), minus the sample's
   median over the genes it holds (the sample's scale), for genes the reconstruction holds at
   ≥ ``min_cpm``;
3. log f_g = median over samples of d_ig (robust to a sample whose composition the fit got
   wrong), shrunk by n / (n + ``shrinkage``) and clipped to ± ``max_log_factor``; a gene without
   evidence (reconstructed below ``min_cpm`` in every sample) gets no factor (0) and is left out
   of the adapted encoder's inputs (:func:`cohort_genes`);
4. ``iterations`` > 1 re-estimates 1-3 with the fit of the corrected bulk (:func:`apply_factors`).

HP-VADE then fine-tunes a copy of its deconvolution encoder on its training mixtures moved to the
cohort's platform (``HPVADEModel.adapted``): each mixture's CPM times f, the genes the cohort lacks
hidden, renormalised; the supervised loss is the training one (true proportions are known for
mixtures). That is the idea of TAPE's adaptive stage (Chen et al. 2022, Nature Communications
13:6735: adapt the model to each target dataset) and of DISSECT's and Scaden's matching of
simulated to real samples (Khatri et al. 2024, Genome Biology 25:112; Menden et al. 2020, Science
Advances 6:eaba2619), written as a supervised fine-tune on platform-matched mixtures; the bulk
itself is never changed. The estimate of f rests on the linear fit's composition, so it cannot by
itself move the cohort's mean composition away from the linear fit's; docs/real-bulk.md has the
measurements and what was tried before.
"""

from __future__ import annotations

import math

import numpy as np

#: Adaptation settings (config ``deconvolution.adapt`` / ``adapt_min_samples``; CLI ``--no-adapt``).
#: Chosen on the three real PBMC cohorts (DAISM calibration, Monaco 2019, SDY67) together with the
#: validation mixtures (docs/real-bulk.md, "Adaptation to the user's bulk").
ADAPT_DEFAULTS = {
    "enabled": True,
    "min_samples": 3,  # fewer samples: only the missing genes are adapted to (no platform factors)
    "iterations": 1,
    "pseudo_cpm": 1.0,  # c of the log ratios
    "min_cpm": 5.0,  # genes reconstructed below this in every sample get no factor
    "shrinkage": 1.0,  # log f_g shrunk by n / (n + shrinkage)
    "max_log_factor": math.log(100.0),
    # the encoder's fine-tune on platform-matched training mixtures (Adam, the training loss)
    "steps": 300,
    "learning_rate": 1e-3,
    "batch_size": 128,
    "seed": 0,
    # the adapted answer: encoder_weight · fine-tuned encoder + (1 - encoder_weight) · linear fit
    "encoder_weight": 0.5,
    # training mixtures (first N) whose platform-matched residuals set the fallback threshold
    "threshold_mixtures": 1000,
}


def adapt_settings(settings: dict | None) -> dict:
    """``ADAPT_DEFAULTS`` updated with ``settings`` (unknown keys are refused with ValueError)."""
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(ADAPT_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown adaptation settings {unknown}; known: {sorted(ADAPT_DEFAULTS)}")
    return {**ADAPT_DEFAULTS, **settings}


def cpm_rows(features: np.ndarray) -> np.ndarray:
    """Rows rescaled to sum 1e6 over their observed (finite) entries; NaN stays NaN."""
    total = np.nansum(features, axis=1, keepdims=True)
    return features / np.where(total > 0, total, 1.0) * 1e6


def platform_factors(linear_fit, features: np.ndarray, settings: dict | None = None) -> np.ndarray:
    """Log per-gene platform factors of a cohort (module docstring), one per model feature.

    Args:
        linear_fit: an ``NNLSModel`` on CPM (its ``signature``, genes x types in CPM, and
            ``mrna_fractions``).
        features: samples x model features, CPM over the observed genes, NaN where the bulk lacks
            the gene.
        settings: ``ADAPT_DEFAULTS`` keys.

    Returns:
        float64 array (features,): log f_g, 0 for genes without evidence (also every gene for a
        cohort of fewer than ``min_samples`` samples). Deterministic: medians and the linear fit's
        solvers only.
    """
    settings = adapt_settings(settings)
    x = np.atleast_2d(np.asarray(features, dtype=np.float64))
    n = x.shape[0]
    log_factors = np.zeros(x.shape[1])
    if n < int(settings["min_samples"]):
        return log_factors
    signature = np.asarray(linear_fit.signature, dtype=np.float64)
    observed = np.isfinite(x)
    c = float(settings["pseudo_cpm"])
    log_x = np.log(np.where(observed, x, 0.0) + c)
    limit = float(settings["max_log_factor"])
    for _ in range(int(settings["iterations"])):
        reconstruction = linear_fit.mrna_fractions(apply_factors(x, log_factors)) @ signature.T  # reference CPM
        held = observed & (reconstruction >= float(settings["min_cpm"]))
        ratio = np.where(held, log_x - np.log(reconstruction + c), np.nan)
        counted = held.any(axis=1)
        scale = np.zeros(n)
        if counted.any():
            scale[counted] = np.nanmedian(ratio[counted], axis=1)
        ratio = ratio - scale[:, None]
        has = held.any(axis=0)
        estimate = np.zeros(x.shape[1])
        if has.any():
            estimate[has] = np.nanmedian(ratio[:, has], axis=0)
        log_factors = np.clip(estimate * n / (n + float(settings["shrinkage"])), -limit, limit)
    return log_factors


def cohort_genes(features: np.ndarray, log_factors: np.ndarray) -> np.ndarray:
    """Bool per model feature: observed in every sample of the cohort and, when any factor was
    estimated, with a factor (genes without evidence are left out of the adapted encoder)."""
    x = np.atleast_2d(np.asarray(features, dtype=np.float64))
    keep = np.isfinite(x).all(axis=0)
    if np.any(log_factors != 0):
        keep &= log_factors != 0
    return keep


def apply_factors(features: np.ndarray, log_factors: np.ndarray) -> np.ndarray:
    """The bulk on the reference's platform: x_ig / f_g, renormalised to CPM over observed genes."""
    x = np.atleast_2d(np.asarray(features, dtype=np.float64))
    return cpm_rows(x * np.exp(-np.asarray(log_factors, dtype=np.float64))[None, :])
