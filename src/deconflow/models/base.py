"""What every fitted model looks like to the rest of the pipeline.

Evaluation, plotting, real-bulk deconvolution and the CLI only see ``FittedModel.predict`` on a
features matrix aligned to ``feature_names``; adding a model is one module in this package plus
its name in ``deconflow.models.MODULES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..errors import DeconflowError
from ..io import atomic_path


class FittedModel(ABC):
    #: registry name ("nnls", "hpvade", ...)
    name: str = ""

    def __init__(self, feature_names, cell_types, normalization: str):
        self.feature_names = np.asarray(feature_names).astype(str)
        self.cell_types = np.asarray(cell_types).astype(str)
        self.normalization = normalization  # "cpm" or "beta": what predict() expects

    @abstractmethod
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Proportions (samples x cell types, rows sum to 1) for features aligned to feature_names."""

    def predict_partial(self, features: np.ndarray) -> np.ndarray:
        """Predict where some features were not measured (NaN), e.g. genes missing from a bulk file.

        The default fills missing features with 0 (CPM: not expressed); models that can simply
        ignore missing rows (NNLS) override this.
        """
        return self.predict(np.nan_to_num(np.asarray(features, dtype=np.float64), nan=0.0))

    @abstractmethod
    def state(self) -> dict:
        """Everything needed to rebuild the model (arrays, tensors, settings)."""

    @classmethod
    @abstractmethod
    def from_state(cls, state: dict, feature_names, cell_types, normalization: str) -> "FittedModel":
        """Inverse of ``state()``; the names come from the checkpoint's top level."""

    def checkpoint(self, provenance: dict | None = None) -> dict:
        return {
            "model": self.name,
            "feature_names": self.feature_names.tolist(),
            "cell_types": self.cell_types.tolist(),
            "normalization": self.normalization,
            "state": self.state(),
            "provenance": provenance or {},
        }


def save_checkpoint(checkpoint: dict, path: str | Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def read_checkpoint(path: str | Path) -> dict:
    import torch

    path = Path(path)
    if not path.exists():
        raise DeconflowError(path, "checkpoint does not exist", "train the model first (snakemake ... train_model)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DeconflowError(path, f"cannot be read as a checkpoint ({type(exc).__name__})", "delete it and rerun training") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise DeconflowError(path, "not a deconflow checkpoint", "pass a checkpoint_best.pt written by deconflow")
    return ckpt


def predict_in_batches(proportions_fn, features: np.ndarray, n_types: int, batch_size: int = 1024) -> np.ndarray:
    """Run a torch ``features -> proportions`` function over CPU batches, without gradients."""
    import torch

    features = np.atleast_2d(np.asarray(features, dtype=np.float32))
    out = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            out.append(proportions_fn(torch.from_numpy(features[start : start + batch_size])).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, n_types))
