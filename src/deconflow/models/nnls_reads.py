"""Read-aware NNLS for methylation (``nnls_reads``): reads weight the fit, a test keeps tissues.

Input per sample and atlas region r: the methylated fraction x_r = m_r / n_r and the coverage
n_r (calls). The simulated mixtures store n in ``extra/coverage``; real samples get (m, n) from
Bismark / MethylDackel calls aggregated into the atlas regions
(:mod:`deconflow.io.methylation_calls`), so both paths run the same fit.

1. **Evidence.** Only the types whose marker regions carry calls are fitted; the others are NaN
   ("no evidence"), never 0 (``deconflow.read_evidence.type_evidence``).
2. **Beta-binomial-weighted NNLS** over those types (``deconflow.read_evidence.read_fit``): each
   region weighted by 1 / (μ(1 − μ)(1/n + ρ)), ρ the sample's over-dispersion.
3. **Detection test, then refit.** Each fitted type and each tissue (``tissues``) is tested by
   the drop in weighted residual when it is allowed (``detection_statistics``), at the stated
   false-call rate ``false_call_rate`` (default 0.001). A type keeps its mass when it or its
   tissue is detected; the others are set to 0 and the kept types refitted. Testing tissues as
   groups keeps a tumour whose DNA the atlas splits between colon, small intestine and stomach,
   which a per-type elimination removed at 5-20 % (issue 32).

Until issue 32 the model eliminated types by a Wald statistic z² ≥ ``wald_threshold`` (5) with
weights = reads, type by type; on real panel reads that removed a gastrointestinal tumour below
10-20 %. Checkpoints written then still load (their ``wald_threshold`` is ignored).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DeconflowError
from ..read_evidence import EVIDENCE_DEFAULTS, analyse_reads, evidence_settings, read_fit, resolve_tissues
from .base import FittedModel, restrict_to_evidence


def refit_supported(signature: np.ndarray, features: np.ndarray, coverage: np.ndarray | None, evidence: np.ndarray,
                    supported: np.ndarray, settings: dict) -> np.ndarray:
    """Samples x types: the read fit over the ``supported`` types (the largest evidenced type when
    none is), 0 on the other evidenced types, NaN without evidence."""
    features = np.atleast_2d(np.asarray(features, dtype=np.float64))
    coverage = np.where(np.isfinite(features), 1.0, 0.0) if coverage is None else np.atleast_2d(np.asarray(coverage, dtype=np.float64))
    out = np.zeros((features.shape[0], signature.shape[1]))
    for i in range(features.shape[0]):
        keep = supported[i] & evidence[i]
        if not keep.any():
            first = read_fit(signature, features[i], coverage[i], evidence[i], settings)["coef"]
            if first.sum() <= 0:
                continue
            keep = np.arange(len(first)) == int(np.argmax(first))
        coef = read_fit(signature, features[i], coverage[i], keep, settings)["coef"]
        out[i] = coef
    return restrict_to_evidence(out, evidence)


class ReadAwareNNLSModel(FittedModel):
    """Beta-binomial-weighted NNLS with a calibrated detection test per type and tissue."""

    name = "nnls_reads"

    def __init__(self, signature: pd.DataFrame, settings: dict | None = None, normalization: str = "beta", tissues: dict | None = None):
        super().__init__(signature.index, signature.columns, normalization)
        self.signature = signature.to_numpy(dtype=np.float64)
        self.settings = {k: v for k, v in {**EVIDENCE_DEFAULTS, **(settings or {})}.items() if k in EVIDENCE_DEFAULTS}
        self.tissues = resolve_tissues(tissues, self.cell_types)

    def atlas_betas(self) -> np.ndarray:
        return self.signature

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Without read counts: every observed region counts as one call."""
        return self.predict_with_coverage(features, None)

    def predict_partial(self, features: np.ndarray) -> np.ndarray:
        return self.predict(features)

    def predict_with_coverage(self, features: np.ndarray, coverage: np.ndarray | None) -> np.ndarray:
        """The evaluation path (mixtures with truth, rows sum to 1): as :meth:`predict_reads`
        with the model's own evidence and test, a type without evidence counted as 0 (the real
        samples' path, ``deconflow deconvolve``, reports it as NaN)."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        counts = np.where(np.isfinite(features), 1.0, 0.0) if coverage is None else coverage
        analysis = analyse_reads(self.signature, self.cell_types, features, counts, self.tissues, self.settings, full_table=False)
        proportions = self.predict_reads(features, counts, analysis["evidence"]["evidence"], analysis["supported"])
        return np.nan_to_num(proportions, nan=0.0)

    def predict_reads(self, features: np.ndarray, coverage: np.ndarray, evidence: np.ndarray, supported: np.ndarray) -> np.ndarray:
        return refit_supported(self.signature, features, coverage, evidence, supported, self.settings)

    def state(self) -> dict:
        return {"signature": self.signature, "settings": dict(self.settings), "tissues": self.tissues}

    @classmethod
    def from_state(cls, state: dict, feature_names, cell_types, normalization: str) -> "ReadAwareNNLSModel":
        return cls(pd.DataFrame(state["signature"], index=feature_names, columns=cell_types), state.get("settings"),
                   normalization, state.get("tissues"))


def fit(train, val, signature: pd.DataFrame, settings: dict, **_) -> ReadAwareNNLSModel:
    """Nothing to learn: the atlas, the ``methylation_evidence`` settings and its ``tissues``."""
    if train.normalization != "beta":
        raise DeconflowError(None, f"model nnls_reads fits methylation betas, but the mixtures are {train.normalization!r}",
                             "use nnls_reads only in the `models` of a `modality: methylation` dataset")
    evidence = dict(settings.get("methylation_evidence") or {})
    tissues = evidence.pop("tissues", None)
    return ReadAwareNNLSModel(signature, evidence_settings(evidence), normalization="beta", tissues=tissues)
