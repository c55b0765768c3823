"""The contract every model implements: the lowest layer of ``deconflow.models``.

It knows no trainer and no other model; model modules import only this (and each other's
building blocks, e.g. ``nnls.batched_nnls``), ``deconflow.training`` sits above them.

Fitted models
-------------
Evaluation, plotting, real-bulk deconvolution and the CLI only see ``FittedModel.predict`` on a
features matrix aligned to ``feature_names``; adding a model is one module in this package plus
its name in ``deconflow.registry.MODULES``. ``FittedModel.checkpoint`` / ``save_checkpoint`` /
``read_checkpoint`` are the checkpoint format every rule reads and writes.

Learned models
--------------
A learned model module (``hpvade``, ``scaden``, ``sparse``) only says *what* to compute; the
trainer (``deconflow.training``) owns data loading, optimisation, device choice, mixed precision,
seeding/determinism, early stopping, checkpoints, resume, the training log, TensorBoard and
progress output. The module defines

``DEFAULTS: dict``
    Its own settings with defaults (merged over ``deconflow.training.TRAINER_DEFAULTS``; the
    run's settings win).

``make_learner(train: MixtureSet, signature: pd.DataFrame, settings: dict, context: LearnerContext) -> Learner``
    Build the model. ``train.features`` are already aligned to ``signature.index`` (the model's
    features) and in the modality's linear space (CPM for RNA, betas for methylation). The torch
    global seed is set before this call, so parameter initialisation is reproducible.
    ``context`` carries optional extras (single cells of the train/val pools for RNA, the run's
    seed, held-out mixtures in ``extra["val_mixtures"]``).

``USES_CELLS: bool`` (optional)
    True if ``make_learner`` wants the train/val single cells in ``context`` (read only then).

and a ``Learner`` (subclass of :class:`Learner` below) with

``module``
    the ``torch.nn.Module`` holding every trainable parameter (moved to the device by the trainer);
``loss_weights: dict[str, float]``
    weight of each named loss term; the optimised loss is ``Σ weight·term``;
``aux_train`` / ``aux_val: dict[str, torch.Tensor]``
    optional extra tensors indexed along dim 0 (e.g. single cells and their labels for a VAE
    branch); each step the trainer draws ``settings["aux_batch_size"]`` rows with replacement,
    from the same seeded generator as the mixture batches, and passes them in the batch dict;
``loss_terms(batch: dict[str, Tensor]) -> dict[str, Tensor]``
    unweighted scalar loss terms; ``batch`` has ``features`` (samples x features, linear space),
    ``proportions`` (true, samples x cell types) and the aux keys. Every term named in
    ``loss_weights`` must be returned;
``selection_terms`` (optional)
    the terms whose weighted validation sum (``val_selection`` in the log) picks the best epoch
    and drives early stopping; default all weighted terms;
``predict(features: Tensor) -> Tensor``
    proportions (rows sum to 1) for validation metrics;
``fitted() -> FittedModel``
    a CPU ``FittedModel`` snapshot of the current parameters (what checkpoints store, and what
    ``deconflow.models.load_model`` rebuilds for evaluation and real-bulk deconvolution).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
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

    def predict_with_coverage(self, features: np.ndarray, coverage: np.ndarray | None) -> np.ndarray:
        """Predict methylation samples given their reads per region (samples x features; 0 where
        the fraction is NaN). Models that weight regions by reads (``nnls_reads``) override this;
        the others only see the fractions, uncovered regions as NaN (``predict_partial``)."""
        return self.predict_partial(features)

    def atlas_betas(self) -> np.ndarray | None:
        """Regions x types betas of a methylation model's atlas (None for RNA models)."""
        return None

    def predict_reads(self, features: np.ndarray, coverage: np.ndarray, evidence: np.ndarray, supported: np.ndarray) -> np.ndarray:
        """Methylation samples with their reads (``deconflow.read_evidence``): ``evidence``
        (samples x types, bool) marks the types whose markers the sample covers, ``supported`` the
        types its read test detects. Types without evidence are NaN ("no evidence", not 0); the
        others sum to 1. Default: :meth:`predict_with_coverage` masked and renormalised."""
        return restrict_to_evidence(self.predict_with_coverage(features, coverage), evidence)

    def predict_quiet(self, features: np.ndarray) -> np.ndarray:
        """``predict_partial`` without per-call log lines (used for the many gene-masked
        replicates of ``deconflow.trust``)."""
        return self.predict_partial(features)

    def held_out_estimates(self, features: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """Estimates of the validation mixtures as if they had not been used to fit the model,
        for calibrating intervals on them (split conformal needs out-of-sample errors). Default:
        the prediction (the model fitted nothing on them); HP-VADE cross-fits its stacking."""
        return self.predict_quiet(features)

    def used_features(self) -> np.ndarray:
        """Indices of the features the model's answer depends on (all by default; NNLS: its markers)."""
        return np.arange(len(self.feature_names))

    def relative_residual(self, features: np.ndarray) -> np.ndarray | None:
        """Per-sample relative residual ||x - S·m|| / ||x|| of the model's own signature fit over
        the observed features, in the space that fit uses; None for models without one."""
        return None

    def fallback_rows(self, features: np.ndarray) -> np.ndarray:
        """Bool per sample: the model answered with a fallback instead of its normal output."""
        return np.zeros(np.atleast_2d(features).shape[0], dtype=bool)

    def adapted(self, features: np.ndarray, mixtures=None, settings: dict | None = None) -> tuple["FittedModel", str, str]:
        """(model to answer this cohort with, adaptation: ``platform`` / ``genes_only`` / ``none``,
        a log line) for a cohort of real bulk samples (samples x features, NaN = not measured),
        ``mixtures`` the training mixtures (``MixtureSet``) or None
        (``deconflow.models.adaptation``). Default: the model itself, not adapted."""
        return self, "none", f"{self.name} has no adaptation step"

    def adaptation_kinds(self, features: np.ndarray) -> np.ndarray:
        """Per sample: how the model was adapted before answering it (``none`` unless ``adapted``)."""
        return np.full(np.atleast_2d(features).shape[0], "none", dtype=object)

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


# --------------------------------------------------------------------------- learned models
@dataclass
class LearnerContext:
    """Optional inputs beyond the mixtures and the signature."""

    seed: int = 0
    cells_train: object | None = None  # scipy CSR CPM, train-pool cells x model features
    labels_train: np.ndarray | None = None  # cell-type index per train cell
    cells_val: object | None = None
    labels_val: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


class Learner(ABC):
    """What the trainer optimises: a module, its weighted loss terms and a FittedModel snapshot."""

    module = None  # torch.nn.Module
    loss_weights: dict[str, float] = {}
    #: terms whose weighted validation sum selects the best epoch and drives early stopping
    #: (None: all weighted terms). HP-VADE uses only its mixture terms, not the VAE's.
    selection_terms: tuple[str, ...] | None = None

    def __init__(self):
        self.aux_train: dict = {}
        self.aux_val: dict = {}

    @abstractmethod
    def loss_terms(self, batch: dict) -> dict:
        """Unweighted scalar loss terms for one batch."""

    @abstractmethod
    def predict(self, features):
        """Proportions tensor for a features tensor (linear space)."""

    @abstractmethod
    def fitted(self) -> FittedModel:
        """A CPU FittedModel snapshot of the current parameters."""


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


def restrict_to_evidence(proportions: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """NaN where ``evidence`` is False, the rest renormalised to sum 1 (samples x types); a
    sample whose mass was all on types without evidence gets uniform shares over the others."""
    proportions = np.where(evidence, np.asarray(proportions, dtype=np.float64), 0.0)
    totals = proportions.sum(axis=1, keepdims=True)
    uniform = evidence / np.maximum(evidence.sum(axis=1, keepdims=True), 1)
    out = np.where(totals > 0, proportions / np.where(totals > 0, totals, 1.0), uniform)
    return np.where(evidence, out, np.nan)
