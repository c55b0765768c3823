"""NNLS baseline: p = NNLS(S, bulk) normalised to sum 1.

Works for CPM (RNA, S = cell-type mean CPM) and for betas (methylation atlas, MethAtlas-style):
both are linear mixtures of their columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from .base import FittedModel


def nnls_proportions(signature: np.ndarray, features: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """Solve min ||S p - x||, p ≥ 0 per sample, then normalise rows to sum 1.

    NaN features (methylation regions without reads, or missing from a bulk file) are dropped
    for that sample only: the fit uses the rows that were observed. ``columns`` (samples x types,
    bool) restricts each sample's fit to those types (the others are exactly 0); the sparse
    model's presence-gated refit uses it. Samples whose solution is all zero (or that have no
    observed feature) get uniform proportions over their allowed types (nothing better is known).
    """
    signature = np.asarray(signature, dtype=np.float64)
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    n_types = signature.shape[1]
    allowed = np.ones((features.shape[0], n_types), dtype=bool) if columns is None else np.array(columns, dtype=bool)
    out = np.zeros((features.shape[0], n_types))
    for i, x in enumerate(features):
        rows = ~np.isnan(x)
        cols = allowed[i]
        if not cols.any():
            cols = np.ones(n_types, dtype=bool)
            allowed[i] = cols
        if not rows.any():
            continue
        S = signature if cols.all() else signature[:, cols]
        if rows.all():
            coef, _ = nnls(S, x, maxiter=50 * n_types)
        else:
            coef, _ = nnls(S[rows], x[rows], maxiter=50 * n_types)
        out[i, cols] = coef
    totals = out.sum(axis=1, keepdims=True)
    zero = totals[:, 0] <= 0
    out[zero] = allowed[zero] / allowed[zero].sum(axis=1, keepdims=True)
    totals[zero] = 1.0
    return out / totals


def batched_nnls(signature: "torch.Tensor", features: "torch.Tensor", iterations: int = 400, em_rounds: int = 2) -> tuple:
    """Approximate NNLS for a batch in torch (FISTA on the normal equations), rows normalised to sum 1.

    The learned models use it as a fixed layer on the training device (sparse: network input;
    hpvade: signature prior); it solves the same problem as :func:`nnls_proportions`.

    NaN features are imputed by S·p of the previous round (EM for least squares with missing
    rows; converges to dropping them). Returns (proportions, RMS residual over observed features).
    """
    import torch

    missing = torch.isnan(features)
    observed = ~missing
    x = torch.where(missing, torch.zeros_like(features), features)
    gram = signature.T @ signature
    lipschitz = torch.linalg.eigvalsh(gram).max().clamp_min(1e-12)
    n_types = signature.shape[1]
    p = torch.full((features.shape[0], n_types), 1.0 / n_types, dtype=features.dtype, device=features.device)
    if missing.any():
        x = torch.where(missing, (p @ signature.T), x)
    rounds = em_rounds if missing.any() else 1
    for _ in range(rounds):
        b = x @ signature
        y, p_prev, t = p.clone(), p.clone(), 1.0
        for _ in range(iterations):
            p_new = (y - (y @ gram - b) / lipschitz).clamp_min(0.0)
            t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
            y = p_new + ((t - 1.0) / t_new) * (p_new - p_prev)
            p_prev, t = p_new, t_new
        p = p_prev
        if missing.any():
            x = torch.where(missing, p @ signature.T, x)
    residual = torch.where(observed, features - p @ signature.T, torch.zeros_like(features))
    rms = (residual.pow(2).sum(dim=1) / observed.sum(dim=1).clamp_min(1)).sqrt()
    totals = p.sum(dim=1, keepdim=True)
    p = torch.where(totals > 0, p / totals.clamp_min(1e-12), torch.full_like(p, 1.0 / n_types))
    return p, rms


class NNLSModel(FittedModel):
    name = "nnls"

    def __init__(self, signature: pd.DataFrame, normalization: str = "cpm", scale: float | None = None):
        super().__init__(signature.index, signature.columns, normalization)
        self.signature = signature.to_numpy(dtype=np.float64)
        # Scaling S and x by the same constant leaves NNLS's solution unchanged but keeps the
        # solver's tolerances meaningful for CPM-sized numbers.
        self.scale = float(scale if scale is not None else max(self.signature.max(), 1e-12))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return nnls_proportions(self.signature / self.scale, np.asarray(features, dtype=np.float64) / self.scale)

    def predict_partial(self, features: np.ndarray) -> np.ndarray:
        """NNLS on the measured features only: dropping rows of S (without re-normalising its
        columns) keeps x ∝ S_shared · p, so the normalised solution is still p."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        out = np.empty((features.shape[0], self.signature.shape[1]))
        for i, x in enumerate(features):
            observed = np.isfinite(x)
            out[i] = nnls_proportions(self.signature[observed] / self.scale, x[observed][None, :] / self.scale)[0]
        return out

    def state(self) -> dict:
        return {"signature": self.signature, "scale": self.scale}

    @classmethod
    def from_state(cls, state: dict, feature_names, cell_types, normalization: str) -> "NNLSModel":
        df = pd.DataFrame(state["signature"], index=feature_names, columns=cell_types)
        return cls(df, normalization=normalization, scale=state["scale"])


def fit(train, val, signature: pd.DataFrame, settings: dict, **_) -> NNLSModel:
    """NNLS has nothing to learn: the fitted model is the signature itself."""
    return NNLSModel(signature, normalization=train.normalization)
