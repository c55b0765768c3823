"""Models: lookup by name (the names live in ``deconflow.registry``), loading checkpoints.

Each model is a module here with ``fit(train, val, signature, settings, **context) -> FittedModel``
and a ``FittedModel`` subclass. ``learned`` models are trained by the GPU rule ``train_model``;
the others are fitted by the CPU rule ``fit_baseline``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import DeconflowError
from ..registry import MODULES
from .base import FittedModel, read_checkpoint, save_checkpoint


def module_for(name: str):
    if name not in MODULES:
        raise DeconflowError(None, f"unknown model {name!r}", f"use one of {sorted(MODULES)} in `models` in the config")
    return importlib.import_module(MODULES[name][0])


def is_learned(name: str) -> bool:
    module_for(name)
    return MODULES[name][1]


def model_class(name: str) -> type[FittedModel]:
    module = module_for(name)
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, FittedModel) and value is not FittedModel and value.name == name:
            return value
    raise RuntimeError(f"module {module.__name__} defines no FittedModel named {name!r}")


def load_model(path: str | Path) -> FittedModel:
    """Rebuild a fitted model from any deconflow checkpoint."""
    ckpt = read_checkpoint(path)
    cls = model_class(ckpt["model"])
    return cls.from_state(ckpt["state"], ckpt["feature_names"], ckpt["cell_types"], ckpt["normalization"])


__all__ = ["FittedModel", "MODULES", "is_learned", "load_model", "model_class", "module_for", "read_checkpoint", "save_checkpoint"]
