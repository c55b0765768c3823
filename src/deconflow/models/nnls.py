"""NNLS baseline: p = NNLS(S, bulk) normalised to sum 1.

Works for CPM (RNA, S = cell-type mean CPM) and for betas (methylation atlas, MethAtlas-style):
both are linear mixtures of their columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from .base import FittedModel


def nnls_proportions(signature: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Solve min ||S p - x||, p ≥ 0 per sample, then normalise rows to sum 1.

    Samples whose solution is all zero get uniform proportions (nothing better is known).
    """
    signature = np.asarray(signature, dtype=np.float64)
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    out = np.empty((features.shape[0], signature.shape[1]))
    for i, x in enumerate(features):
        coef, _ = nnls(signature, x, maxiter=50 * signature.shape[1])
        out[i] = coef
    totals = out.sum(axis=1, keepdims=True)
    zero = totals[:, 0] <= 0
    out[zero] = 1.0 / signature.shape[1]
    totals[zero] = 1.0
    return out / totals


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

    def state(self) -> dict:
        return {"signature": self.signature, "scale": self.scale}

    @classmethod
    def from_state(cls, state: dict, feature_names, cell_types, normalization: str) -> "NNLSModel":
        df = pd.DataFrame(state["signature"], index=feature_names, columns=cell_types)
        return cls(df, normalization=normalization, scale=state["scale"])


def fit(train, val, signature: pd.DataFrame, settings: dict, **_) -> NNLSModel:
    """NNLS has nothing to learn: the fitted model is the signature itself."""
    return NNLSModel(signature, normalization=train.normalization)
