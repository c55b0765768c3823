"""The trainer for learned (torch) models: one loop for every model in ``models/``.

Module/model split
------------------
A learned model module (``models/hpvade.py``, ``models/scaden.py``, ``models/sparse.py``) only
says *what* to compute; this trainer owns data loading, optimisation, device choice, mixed
precision, seeding/determinism, early stopping, checkpoints, resume, the training log, TensorBoard
and progress output.

Contract for a learned model module
-----------------------------------
The module defines

``DEFAULTS: dict``
    Its own settings with defaults (merged over ``TRAINER_DEFAULTS``; the run's settings win).

``make_learner(train: MixtureSet, signature: pd.DataFrame, settings: dict, context: LearnerContext) -> Learner``
    Build the model. ``train.features`` are already aligned to ``signature.index`` (the model's
    features) and in the modality's linear space (CPM for RNA, betas for methylation). The torch
    global seed is set before this call, so parameter initialisation is reproducible.
    ``context`` carries optional extras (single cells of the train/val pools for RNA, the run's
    seed, a logger).

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

Settings (flat dict; the model's own sub-dict, if present under the model's name, is merged in)
------------------------------------------------------------------------------------------------
See ``TRAINER_DEFAULTS`` (shared by all learned models) and each model's ``DEFAULTS``.

Outputs
-------
``checkpoint_best.pt``: the normal deconflow checkpoint (``FittedModel.checkpoint(provenance)``) of
the epoch with the lowest validation selection loss. ``checkpoint_last.pt``: the same for the last finished
epoch plus a ``resume`` entry (full module and optimiser state, scheduler, epoch, early-stopping
state and the history so far). A rerun resumes from it when its recorded model, seed, settings
and input checksums equal the current ones; otherwise it starts fresh and logs why.
``training_log.csv``: one row per epoch (train/val loss per term and total, ``val_selection`` (the
early-stopping loss), val MAE, val mean r,
learning rate, seconds), rewritten atomically after each epoch with a fixed float format, so two
CPU runs with the same seed give identical files except for the wall-clock ``seconds`` column.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import math
import os
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .errors import DeconflowError
from .evaluation import compute_metrics
from .io import MixtureSet, file_checksum, read_mixtures, read_signature, write_table
from .models.base import FittedModel, read_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

#: Settings shared by every learned model (config section ``train``).
TRAINER_DEFAULTS: dict = {
    "epochs": 60,  # maximum number of epochs
    "batch_size": 64,  # mixtures per optimisation step
    "aux_batch_size": 128,  # auxiliary rows per step (single cells for the HP-VADE VAE branch)
    "learning_rate": 1e-3,  # AdamW learning rate
    "weight_decay": 1e-5,  # AdamW weight decay
    "lr_schedule": "cosine",  # "cosine" (to 1 % of the start over `epochs`) or "constant"
    "warmup_epochs": 0,  # linear learning-rate warm-up over this many epochs before the schedule
    "gradient_accumulation": 1,  # optimiser step every N batches (effective batch = N * batch_size)
    "grad_clip": 5.0,  # max gradient norm; 0 disables clipping
    "patience": 10,  # early stopping: epochs without a val-loss improvement > min_delta
    "min_delta": 0.0,  # improvement needed to reset the patience counter
    # what picks the best epoch and drives early stopping: "loss" (weighted validation selection
    # terms) or "val_mae" (validation MAE of the proportions)
    "selection_metric": "loss",
    "device": "auto",  # auto (CUDA if available, else CPU) | cpu | cuda
    "num_threads": 2,  # torch CPU threads
    "mixed_precision": True,  # bf16 autocast on CUDA; ignored on CPU
    "deterministic": True,  # torch.use_deterministic_algorithms on CPU
    "tensorboard": True,  # write TensorBoard events if tensorboard is installed
    "n_train_mixtures": None,  # use only the first N training mixtures (None: all); smoke tests
}

LEARNED_MODULES_EXPECTED = ("DEFAULTS", "make_learner")


def _selection_score(row: dict, metric: str) -> float:
    """Lower is better: the weighted validation selection loss, or the validation MAE."""
    if metric == "loss":
        return float(row["val_selection"])
    if metric == "val_mae":
        return float(row["val_mae"])
    raise DeconflowError(None, f"unknown selection_metric {metric!r}", "use `loss` or `val_mae` in train.selection_metric")


def _lr_factor(schedule: str, warmup_epochs: int, epochs: int):
    """Learning-rate multiplier per epoch: linear warm-up, then cosine to 1 % (or constant)."""
    if schedule not in ("cosine", "constant"):
        raise DeconflowError(None, f"unknown lr_schedule {schedule!r}", "use `cosine` or `constant` in train.lr_schedule")

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / warmup_epochs
        if schedule == "constant":
            return 1.0
        span = max(1, epochs - warmup_epochs)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(epoch - warmup_epochs, span) / span))

    return factor


# --------------------------------------------------------------------------- contract
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


# --------------------------------------------------------------------------- settings
def resolve_settings(model_name: str, settings: dict | None) -> dict:
    """TRAINER_DEFAULTS <- model DEFAULTS <- settings (with settings[model_name] merged in)."""
    from .models import MODULES, module_for

    module = module_for(model_name)
    missing = [name for name in LEARNED_MODULES_EXPECTED if not hasattr(module, name)]
    if missing:
        raise DeconflowError(None, f"model {model_name!r} is not a learned model (its module lacks {missing})", "train it with fit_baseline")
    given = dict(settings or {})
    own = given.pop(model_name, None)
    for other in MODULES:  # sub-dicts of other models are not ours
        if isinstance(given.get(other), dict):
            given.pop(other)
    if isinstance(own, dict):
        given.update(own)
    resolved = {**TRAINER_DEFAULTS, **module.DEFAULTS}
    unknown = sorted(set(given) - set(resolved))
    if unknown:
        log.warning("ignoring settings unknown to %s: %s", model_name, unknown)
    resolved.update({k: v for k, v in given.items() if k in resolved})
    if resolved["device"] not in ("auto", "cpu", "cuda"):
        raise DeconflowError(None, f"train.device is {resolved['device']!r}", "use auto, cpu or cuda")
    if resolved["lr_schedule"] not in ("cosine", "constant"):
        raise DeconflowError(None, f"train.lr_schedule is {resolved['lr_schedule']!r}", "use cosine or constant")
    for key in ("epochs", "batch_size", "aux_batch_size"):
        if int(resolved[key]) < 1:
            raise DeconflowError(None, f"train.{key} must be ≥ 1 (got {resolved[key]!r})", f"set train.{key} to a positive integer")
    return resolved


def choose_device(requested: str):
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise DeconflowError(None, "train.device is cuda but no CUDA device is visible", "use device: auto, or run on a GPU node")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


# --------------------------------------------------------------------------- helpers
def align_features(mixtures: MixtureSet, feature_names, source=None) -> np.ndarray:
    """Mixture features reordered to ``feature_names`` (all must be present)."""
    index = pd.Index(mixtures.feature_names).get_indexer(pd.Index(feature_names))
    if np.any(index < 0):
        missing = np.asarray(feature_names)[index < 0][:5].tolist()
        raise DeconflowError(
            source,
            f"{int((index < 0).sum())} signature features are not in the mixtures (e.g. {missing})",
            "the signature and the mixtures come from different references; rerun the signature and pseudobulk rules",
        )
    return np.ascontiguousarray(mixtures.features[:, index], dtype=np.float32)


def check_cell_types(mixtures: MixtureSet, cell_types, source=None) -> None:
    if list(map(str, mixtures.cell_types)) != list(map(str, cell_types)):
        raise DeconflowError(
            source,
            f"mixture cell types {list(mixtures.cell_types)} differ from the signature's {list(cell_types)}",
            "rerun the signature and pseudobulk rules from the same reference",
        )


def _format_row(row: dict) -> str:
    parts = [f"epoch {row['epoch']:>3}", f"train {row['train_total']:.4g}", f"val {row['val_total']:.4g}",
             f"val_selection {row['val_selection']:.4g}"]
    parts += [f"val_mae {row['val_mae']:.4f}", f"val_r {row['val_mean_r']:.3f}", f"lr {row['lr']:.2e}", f"{row['seconds']:.1f}s"]
    return "  ".join(parts)


@contextlib.contextmanager
def _torch_runtime(device, settings: dict):
    """Thread count and determinism for the run; previous global values are restored after."""
    import torch

    previous_threads = torch.get_num_threads()
    previous_det = torch.are_deterministic_algorithms_enabled()
    try:
        if settings.get("num_threads"):
            torch.set_num_threads(int(settings["num_threads"]))
        if device.type == "cpu" and settings["deterministic"]:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_det)


def _open_tensorboard(directory, enabled: bool):
    if not directory or not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed; no TensorBoard log (pip install 'deconflow[tensorboard]')")
        Path(directory).mkdir(parents=True, exist_ok=True)
        return None
    return SummaryWriter(log_dir=str(directory))


# --------------------------------------------------------------------------- the loop
def train_learner(
    model_name: str,
    train: MixtureSet,
    val: MixtureSet,
    signature: pd.DataFrame,
    settings: dict | None,
    seed: int,
    context: LearnerContext | None = None,
    outputs: dict | None = None,
    provenance: dict | None = None,
) -> tuple[FittedModel, pd.DataFrame]:
    """Train ``model_name`` in memory; return (best FittedModel, history table).

    ``train``/``val`` must already be aligned to ``signature.index``. ``outputs`` (optional) has
    ``best``, ``last``, ``history``, ``tensorboard_dir`` paths. ``provenance`` is stored in the
    checkpoints and, with the settings, decides whether an existing ``last`` checkpoint is resumed.
    """
    import torch

    from .models import module_for

    settings = resolve_settings(model_name, settings)
    module_py = module_for(model_name)
    outputs = dict(outputs or {})
    context = context or LearnerContext(seed=seed)
    context.seed = seed
    device = choose_device(settings["device"])
    cell_types = list(map(str, signature.columns))
    train_features = np.asarray(train.features, dtype=np.float32)
    train_props = np.asarray(train.proportions, dtype=np.float32)
    if settings["n_train_mixtures"]:
        n_keep = int(settings["n_train_mixtures"])
        train_features, train_props = train_features[:n_keep], train_props[:n_keep]
        train = MixtureSet(train_features, train_props, train.feature_names, train.cell_types, train.sample_ids[:n_keep], train.attrs)
    val_features = np.asarray(val.features, dtype=np.float32)
    val_props = np.asarray(val.proportions, dtype=np.float64)
    identity = {
        "model": model_name,
        "seed": int(seed),
        "settings": {k: settings[k] for k in sorted(settings) if k not in ("device", "num_threads", "tensorboard")},
        "input_checksums": dict((provenance or {}).get("input_checksums", {})),
    }
    base_provenance = {
        **(provenance or {}),
        **identity,
        "deconflow_version": __version__,
        "torch_version": torch.__version__,
        "device": str(device) if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
    }
    log.info("training %s on %s (torch %s, %d threads); %d train / %d val mixtures, %d features, %d cell types",
             model_name, base_provenance["device"], torch.__version__,
             int(settings["num_threads"] or torch.get_num_threads()) if device.type == "cpu" else 0,
             len(train_features), len(val_features), len(signature.index), len(cell_types))

    with _torch_runtime(device, settings):
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        # held-out mixtures for learners that calibrate after training (HP-VADE's NNLS blend)
        context.extra["val_mixtures"] = (val_features, val_props)
        learner: Learner = module_py.make_learner(train, signature, settings, context)
        module = learner.module.to(device)
        aux_train = {k: v.to(device) for k, v in learner.aux_train.items()}
        aux_val = {k: v.to(device) for k, v in learner.aux_val.items()}
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=float(settings["learning_rate"]), weight_decay=float(settings["weight_decay"]))
        epochs = int(settings["epochs"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_factor(settings["lr_schedule"], int(settings["warmup_epochs"]), epochs)
        )
        accumulate = max(1, int(settings["gradient_accumulation"]))
        use_amp = device.type == "cuda" and bool(settings["mixed_precision"])
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

        start_epoch, best_loss, bad_epochs, rows = 1, math.inf, 0, []
        best_checkpoint = None
        resumed = _try_resume(outputs.get("last"), identity)
        if resumed is not None:
            module.load_state_dict(resumed["module"])
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            start_epoch = int(resumed["epoch"]) + 1
            best_loss, bad_epochs, rows = float(resumed["best_loss"]), int(resumed["bad_epochs"]), list(resumed["history"])
            best_path = outputs.get("best")
            if best_path and Path(best_path).exists():
                best_checkpoint = read_checkpoint(best_path)
            log.info("resuming from %s at epoch %d (best val loss so far %.6g)", outputs["last"], start_epoch, best_loss)
            if resumed.get("stopped"):
                start_epoch = epochs + 1  # the run had already finished (early stop); nothing to do

        train_x = torch.from_numpy(train_features).to(device)
        train_p = torch.from_numpy(train_props).to(device)
        val_x = torch.from_numpy(val_features).to(device)
        val_p = torch.from_numpy(val_props.astype(np.float32)).to(device)
        batch_size = int(settings["batch_size"])
        aux_batch = int(settings["aux_batch_size"])
        writer = _open_tensorboard(outputs.get("tensorboard_dir"), settings["tensorboard"])
        show_bar = sys.stderr.isatty()
        stopped = False
        try:
            for epoch in range(start_epoch, epochs + 1):
                started = time.perf_counter()
                # Per-epoch seeds: an interrupted and resumed run sees the same batches and dropout
                # masks as an uninterrupted one.
                generator = torch.Generator(device="cpu").manual_seed(seed * 100_003 + epoch)
                torch.manual_seed(seed * 100_003 + epoch)
                module.train()
                order = torch.randperm(len(train_x), generator=generator)
                n_batches = max(1, len(order) // batch_size)  # drop the ragged last batch
                sums: dict[str, float] = {}
                batches = range(n_batches)
                if show_bar:
                    from tqdm import tqdm

                    batches = tqdm(batches, desc=f"{model_name} epoch {epoch}/{epochs}", leave=False, file=sys.stderr)
                for b in batches:
                    idx = order[b * batch_size : (b + 1) * batch_size].to(device)
                    batch = {"features": train_x[idx], "proportions": train_p[idx]}
                    for key, value in _draw_aux(aux_train, aux_batch, generator).items():
                        batch[key] = value
                    if b % accumulate == 0:
                        optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                        terms = learner.loss_terms(batch)
                    _check_finite(terms, epoch, "train")
                    total = _weighted_total(terms, learner.loss_weights)
                    scaler.scale(total / accumulate).backward()
                    if (b + 1) % accumulate == 0 or b + 1 == n_batches:
                        if settings["grad_clip"]:
                            scaler.unscale_(optimizer)
                            torch.nn.utils.clip_grad_norm_(params, float(settings["grad_clip"]))
                        scaler.step(optimizer)
                        scaler.update()
                    for name, value in terms.items():
                        sums[name] = sums.get(name, 0.0) + float(value.detach())
                    sums["total"] = sums.get("total", 0.0) + float(total.detach())
                lr = optimizer.param_groups[0]["lr"]
                scheduler.step()
                train_means = {k: v / n_batches for k, v in sums.items()}
                val_terms, val_pred = _evaluate(learner, module, val_x, val_p, aux_val, aux_batch, seed, epoch, device, use_amp, amp_dtype)
                _check_finite({k: torch.tensor(v) for k, v in val_terms.items()}, epoch, "validation")
                metrics = compute_metrics(val_props, val_pred, cell_types)
                row = {"epoch": epoch}
                row.update({f"train_{k}": v for k, v in train_means.items()})
                row.update({f"val_{k}": v for k, v in val_terms.items()})
                row.update({"val_mae": metrics["mae"], "val_mean_r": metrics["mean_r"], "lr": lr, "seconds": time.perf_counter() - started})
                rows.append(row)
                score = _selection_score(row, settings["selection_metric"])
                improved = score < best_loss - float(settings["min_delta"])
                fitted = learner.fitted()
                if improved:
                    best_loss, bad_epochs = score, 0
                    best_checkpoint = fitted.checkpoint({**base_provenance, "epoch": epoch, "val_loss": best_loss, "val_mae": metrics["mae"]})
                    if outputs.get("best"):
                        save_checkpoint(best_checkpoint, outputs["best"])
                else:
                    bad_epochs += 1
                stopped = bad_epochs >= int(settings["patience"])
                if outputs.get("history"):
                    write_history(rows, outputs["history"])
                if outputs.get("last"):
                    last = fitted.checkpoint({**base_provenance, "epoch": epoch, "val_loss": val_terms["total"]})
                    last["resume"] = {
                        "identity": identity,
                        "module": module.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                        "best_loss": best_loss,
                        "bad_epochs": bad_epochs,
                        "history": rows,
                        "stopped": stopped,
                    }
                    save_checkpoint(last, outputs["last"])
                if writer is not None:
                    for key, value in row.items():
                        if key != "epoch":
                            writer.add_scalar(key.replace("_", "/", 1), value, epoch)
                log.info("%s%s", _format_row(row), "  *" if improved else "")
                if stopped:
                    log.info("early stopping at epoch %d: no val-loss improvement for %d epochs", epoch, bad_epochs)
                    break
        finally:
            if writer is not None:
                writer.close()
        if best_checkpoint is None:  # resumed a finished run without a best file on disk
            best_checkpoint = learner.fitted().checkpoint(base_provenance)
            if outputs.get("best"):
                save_checkpoint(best_checkpoint, outputs["best"])
        if outputs.get("history"):
            write_history(rows, outputs["history"])
    if rows:
        best_row = min(rows, key=lambda r: _selection_score(r, settings["selection_metric"]))
        log.info("best epoch %d: val loss %.6g, val MAE %.4f, val mean r %.3f; %.1f s over %d epochs",
                 best_row["epoch"], best_row["val_selection"], best_row["val_mae"], best_row["val_mean_r"],
                 sum(r["seconds"] for r in rows), len(rows))
    from .models import model_class

    cls = model_class(model_name)
    fitted = cls.from_state(best_checkpoint["state"], best_checkpoint["feature_names"], best_checkpoint["cell_types"], best_checkpoint["normalization"])
    return fitted, history_frame(rows)


def _draw_aux(aux: dict, n: int, generator) -> dict:
    import torch

    if not aux:
        return {}
    length = len(next(iter(aux.values())))
    idx = torch.randint(0, length, (n,), generator=generator)
    return {key: value[idx.to(value.device)] for key, value in aux.items()}


def _weighted_total(terms: dict, weights: dict):
    missing = [name for name in weights if name not in terms]
    if missing:
        raise RuntimeError(f"loss_terms() did not return {missing}")
    return sum(float(weights[name]) * terms[name].float() for name in weights)


def _check_finite(terms: dict, epoch: int, phase: str) -> None:
    import torch

    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()])
    if bool(torch.isfinite(values).all()):
        return
    bad = [name for name, v in zip(terms, values.tolist()) if not math.isfinite(v)]
    raise DeconflowError(
        None,
        f"loss term {bad[0]!r} is {values[list(terms).index(bad[0])].item()} in {phase} at epoch {epoch}"
        + (f" (also non-finite: {bad[1:]})" if len(bad) > 1 else ""),
        "lower train.learning_rate or the loss weight of that term, and check the inputs for NaN/inf",
    )


def _evaluate(learner, module, val_x, val_p, aux_val, aux_batch, seed, epoch, device, use_amp, amp_dtype):
    import torch

    module.eval()
    generator = torch.Generator(device="cpu").manual_seed(seed * 100_003 + epoch + 50_000)
    batch = {"features": val_x, "proportions": val_p, **_draw_aux(aux_val, max(aux_batch, 1), generator)}
    with torch.no_grad(), torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
        terms = learner.loss_terms(batch)
        pred = learner.predict(val_x)
    out = {name: float(value.float()) for name, value in terms.items()}
    out["total"] = float(_weighted_total(terms, learner.loss_weights))
    chosen = learner.selection_terms or tuple(learner.loss_weights)
    out["selection"] = float(_weighted_total(terms, {k: learner.loss_weights[k] for k in chosen}))
    return out, pred.float().cpu().numpy().astype(np.float64)


def history_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def write_history(rows: list[dict], path) -> None:
    frame = history_frame(rows)
    write_table(frame, path, index=False, float_format="%.6g")


def _try_resume(path, identity: dict) -> dict | None:
    if not path or not Path(path).exists():
        return None
    try:
        ckpt = read_checkpoint(path)
    except DeconflowError as exc:
        log.info("not resuming: %s", exc)
        return None
    resume = ckpt.get("resume")
    if not resume:
        log.info("not resuming: %s has no resume state", path)
        return None
    previous = resume.get("identity", {})
    for key in ("model", "seed", "settings", "input_checksums"):
        if previous.get(key) != identity[key]:
            if key == "settings":
                changed = sorted(k for k in set(previous.get(key, {})) | set(identity[key]) if previous.get(key, {}).get(k) != identity[key].get(k))
                log.info("not resuming from %s: settings changed (%s); starting fresh", path, ", ".join(changed))
            elif key == "input_checksums":
                changed = sorted(k for k in set(previous.get(key, {})) | set(identity[key]) if previous.get(key, {}).get(k) != identity[key].get(k))
                log.info("not resuming from %s: inputs changed (%s); starting fresh", path, ", ".join(changed))
            else:
                log.info("not resuming from %s: %s changed (%r -> %r); starting fresh", path, key, previous.get(key), identity[key])
            return None
    return resume


# --------------------------------------------------------------------------- from files
def read_training_cells(reference_path, split_path, feature_names, cell_types, label_key="cell_type", counts_layer=None):
    """CPM of the train- and val-pool single cells over ``feature_names`` (CPM over all genes).

    Returns (cells_train, labels_train, cells_val, labels_val); labels are indices into cell_types.
    """
    from .io import read_reference
    from .normalize import cpm

    reference = read_reference(reference_path, label_key=label_key, counts_layer=counts_layer)
    from .split import read_split

    cell_split = read_split(split_path, reference.cell_ids)
    gene_index = pd.Index(reference.genes).get_indexer(pd.Index(feature_names))
    if np.any(gene_index < 0):
        raise DeconflowError(reference_path, f"{int((gene_index < 0).sum())} signature genes are not in the reference", "rerun the signature rule")
    type_index = {t: i for i, t in enumerate(cell_types)}
    out = []
    for name in ("train", "val"):
        keep = np.flatnonzero(cell_split == name)
        keep = keep[[lab in type_index for lab in reference.labels[keep]]]
        if len(keep) == 0:
            out += [None, None]
            continue
        cells = cpm(reference.counts[keep])[:, gene_index].tocsr().astype(np.float32)
        out += [cells, np.array([type_index[lab] for lab in reference.labels[keep]], dtype=np.int64)]
    return tuple(out)


def train_from_files(
    model_name: str,
    train_path,
    val_path,
    signature_path,
    reference_path,
    split_path,
    dataset: dict,
    settings: dict,
    seed: int,
    outputs: dict,
) -> None:
    """Entry point of the ``train_model`` rule.

    ``dataset``: ``label_key``, ``counts_layer``, ``modality`` ("rna" → CPM mixtures and, when
    ``reference_path`` and ``split_path`` are given, train/val single cells for models that use
    them; "methylation" → beta mixtures, no cells). ``outputs``: ``best``, ``last``, ``history``,
    ``tensorboard_dir`` (may be None). ``settings``: see ``TRAINER_DEFAULTS`` and the model's
    ``DEFAULTS``.
    """
    modality = dataset.get("modality", "rna")
    normalization = {"rna": "cpm", "methylation": "beta"}.get(modality)
    if normalization is None:
        raise DeconflowError(None, f"unknown modality {modality!r}", "use rna or methylation")
    signature = read_signature(signature_path)
    train = read_mixtures(train_path, expect_normalization=normalization)
    val = read_mixtures(val_path, expect_normalization=normalization)
    for mixtures, path in ((train, train_path), (val, val_path)):
        check_cell_types(mixtures, signature.columns, path)
    features = signature.index
    train.features = align_features(train, features, train_path)
    train.feature_names = np.asarray(features)
    val.features = align_features(val, features, val_path)
    val.feature_names = np.asarray(features)
    inputs = {"train": train_path, "val": val_path, "signature": signature_path, "reference": reference_path, "split": split_path}
    checksums = {name: file_checksum(p) for name, p in inputs.items() if p}
    context = LearnerContext(seed=seed)
    from .models import module_for

    if modality == "rna" and reference_path and split_path and getattr(module_for(model_name), "USES_CELLS", False):
        cells = read_training_cells(reference_path, split_path, features, list(signature.columns),
                                    dataset.get("label_key", "cell_type"), dataset.get("counts_layer"))
        context.cells_train, context.labels_train, context.cells_val, context.labels_val = cells
    provenance = {"inputs": {k: str(v) for k, v in inputs.items() if v}, "input_checksums": checksums, "dataset": dict(dataset)}
    train_learner(model_name, train, val, signature, settings, seed, context=context, outputs=outputs, provenance=provenance)
