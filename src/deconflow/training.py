"""The trainer for learned (torch) models: one loop for every model in ``models/``.

Module/model split
------------------
A learned model module (``models/hpvade.py``, ``models/scaden.py``, ``models/sparse.py``) only
says *what* to compute, through the contract in ``deconflow.models.base`` (``DEFAULTS``,
``make_learner``, ``Learner``, ``LearnerContext``, ``FittedModel``); this trainer owns data
loading, optimisation, device choice, mixed precision, seeding/determinism, early stopping,
checkpoints, resume, the training log, TensorBoard and progress output. It sits above the models
and imports them; they never import it.

The loop (``train_learner``)
----------------------------
Set up device and runtime (``build_learner``), build optimiser and schedule
(``build_optimisation``), ``resume`` from ``checkpoint_last.pt``, then per epoch
``train_one_epoch``, ``evaluate``, ``select_best`` (and early stopping), ``save_checkpoints``,
``log_epoch``.

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
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import __version__
from .cell_content import reference_cell_size
from .errors import DeconflowError
from .evaluation import compute_metrics
from .io import MixtureSet, file_checksum, open_reference, read_mixtures, read_signature, write_table
from .models import MODULES, from_checkpoint, module_for
from .models.base import FittedModel, Learner, LearnerContext, read_checkpoint, save_checkpoint
from .normalize import cpm
from .split import read_split
from .threads import NUMERICAL_THREADS, fixed_threads

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


# --------------------------------------------------------------------------- settings
def resolve_settings(model_name: str, settings: dict | None) -> dict:
    """TRAINER_DEFAULTS <- model DEFAULTS <- settings (with settings[model_name] merged in)."""
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
    from .config import number_text_fix

    for key, value in resolved.items():  # `epochs: 1e2` is text to YAML 1.1 (the workflow refuses it at build)
        text = number_text_fix(value)
        if text is not None:
            raise DeconflowError(None, f"train.{key}: {text[0]}", text[1])
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
    """Thread counts and determinism for the run; previous global values are restored after.

    torch runs ``num_threads`` intra-op threads (:func:`torch_threads`), BLAS / OpenMP pools of
    numpy and scipy one (``deconflow.threads``). Training is bit-identical for the same thread
    count only (torch's CPU kernels split reductions by thread), so the count is recorded in the
    checkpoint's provenance (``torch_threads``) and in the training log.
    """
    import torch

    previous_det = torch.are_deterministic_algorithms_enabled()
    with fixed_threads(NUMERICAL_THREADS, torch_threads=torch_threads(settings)):
        try:
            if device.type == "cpu" and settings["deterministic"]:
                torch.use_deterministic_algorithms(True)
            yield
        finally:
            torch.use_deterministic_algorithms(previous_det)


def torch_threads(settings: dict) -> int:
    """torch intra-op threads of a training run: ``num_threads``, or torch's current count when 0/None."""
    import torch

    return int(settings.get("num_threads") or torch.get_num_threads())


@contextlib.contextmanager
def _tensorboard(directory, enabled: bool):
    """A TensorBoard SummaryWriter for the run (None when disabled or not installed), closed after."""
    if not directory or not enabled:
        yield None
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed; no TensorBoard log (pip install 'deconflow[tensorboard]')")
        Path(directory).mkdir(parents=True, exist_ok=True)
        yield None
        return
    writer = SummaryWriter(log_dir=str(directory))
    try:
        yield writer
    finally:
        writer.close()


# --------------------------------------------------------------------------- the loop
@dataclass
class TrainingTensors:
    """The run's mixtures and auxiliary rows on the training device."""

    device: object  # torch.device
    train_x: object  # torch tensors: features and true proportions
    train_p: object
    val_x: object
    val_p: object
    val_props: np.ndarray  # true validation proportions, float64, for the metrics
    cell_types: list[str]
    aux_train: dict = field(default_factory=dict)
    aux_val: dict = field(default_factory=dict)


@dataclass
class Optimisation:
    """Optimiser, learning-rate schedule and mixed-precision settings of one run."""

    params: list
    optimizer: object
    scheduler: object
    scaler: object  # torch.amp.GradScaler (a no-op unless float16 autocast)
    accumulate: int  # optimiser step every N batches
    grad_clip: float  # max gradient norm; 0: no clipping
    use_amp: bool
    amp_dtype: object

    def autocast(self, device):
        import torch

        return torch.autocast(device_type=device.type, dtype=self.amp_dtype, enabled=self.use_amp)


@dataclass
class Progress:
    """Where the run stands: what resume restores and each epoch updates."""

    start_epoch: int = 1
    best_loss: float = math.inf  # selection score of the best epoch so far (lower is better)
    bad_epochs: int = 0  # epochs since the last improvement
    rows: list = field(default_factory=list)  # the training log so far
    best_checkpoint: dict | None = None
    stopped: bool = False  # early stopping triggered at the last epoch


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
    settings = resolve_settings(model_name, settings)
    outputs = dict(outputs or {})
    context = context or LearnerContext(seed=seed)
    context.seed = seed
    device = choose_device(settings["device"])
    train = first_mixtures(train, settings["n_train_mixtures"])
    identity = run_identity(model_name, seed, settings, provenance)
    run_provenance = checkpoint_provenance(identity, provenance, device, settings)
    _log_start(model_name, run_provenance, settings, device, train, val, signature)
    epochs = int(settings["epochs"])
    with _torch_runtime(device, settings):
        learner, tensors = build_learner(model_name, train, val, signature, settings, context, seed, device)
        optimisation = build_optimisation(learner.module, settings, device)
        progress = resume(outputs, identity, learner.module, optimisation, epochs)
        with _tensorboard(outputs.get("tensorboard_dir"), settings["tensorboard"]) as writer:
            for epoch in range(progress.start_epoch, epochs + 1):
                started = time.perf_counter()
                train_means, lr = train_one_epoch(learner, tensors, optimisation, settings, seed, epoch,
                                                  f"{model_name} epoch {epoch}/{epochs}")
                val_terms, metrics = evaluate(learner, tensors, optimisation, settings, seed, epoch)
                row = epoch_row(epoch, train_means, val_terms, metrics, lr, time.perf_counter() - started)
                progress.rows.append(row)
                improved = select_best(progress, row, settings)
                save_checkpoints(progress, learner, optimisation, improved, row, identity, run_provenance, outputs)
                log_epoch(row, improved, progress.rows, writer, outputs.get("history"))
                if progress.stopped:
                    log.info("early stopping at epoch %d: no val-loss improvement for %d epochs", epoch, progress.bad_epochs)
                    break
        finish(progress, learner, run_provenance, outputs)
    _log_best_epoch(progress.rows, settings["selection_metric"])
    return from_checkpoint(progress.best_checkpoint), history_frame(progress.rows)


# --------------------------------------------------------------------------- set-up
def first_mixtures(train: MixtureSet, n_keep) -> MixtureSet:
    """The first ``n_keep`` training mixtures (``train.n_train_mixtures``; None or 0: all)."""
    if not n_keep:
        return train
    n_keep = int(n_keep)
    features = np.asarray(train.features, dtype=np.float32)[:n_keep]
    proportions = np.asarray(train.proportions, dtype=np.float32)[:n_keep]
    return MixtureSet(features, proportions, train.feature_names, train.cell_types, train.sample_ids[:n_keep], train.attrs)


def run_identity(model_name: str, seed: int, settings: dict, provenance: dict | None) -> dict:
    """What a ``last`` checkpoint must match to be resumed: model, seed, settings, input checksums."""
    return {
        "model": model_name,
        "seed": int(seed),
        "settings": {k: settings[k] for k in sorted(settings) if k not in ("device", "num_threads", "tensorboard")},
        "input_checksums": dict((provenance or {}).get("input_checksums", {})),
    }


def checkpoint_provenance(identity: dict, provenance: dict | None, device, settings: dict | None = None) -> dict:
    """Provenance stored in every checkpoint of the run (the caller's, the identity, versions, device,
    and on CPU the torch thread count the weights were computed with: same count ⇒ same bytes)."""
    import torch

    return {
        **(provenance or {}),
        **identity,
        "deconflow_version": __version__,
        "torch_version": torch.__version__,
        "device": str(device) if device.type == "cpu" else f"cuda ({torch.cuda.get_device_name(device)})",
        **({"torch_threads": torch_threads(settings)} if device.type == "cpu" and settings is not None else {}),
    }


def _log_start(model_name, run_provenance, settings, device, train, val, signature) -> None:
    import torch

    if device.type == "cpu":
        runtime = f"torch {torch.__version__}, {torch_threads(settings)} threads"
    else:
        amp_dtype = autocast_dtype(device, settings)
        precision = "fp32" if amp_dtype is None else f"{'bf16' if amp_dtype == torch.bfloat16 else 'fp16'} autocast"
        runtime = f"torch {torch.__version__}, {precision}"
    log.info("training %s on %s (%s); %d train / %d val mixtures, %d features, %d cell types", model_name,
             run_provenance["device"], runtime, len(train.features), len(val.features), len(signature.index), len(signature.columns))


def build_learner(model_name, train, val, signature, settings, context, seed, device) -> tuple[Learner, TrainingTensors]:
    """Seed, let the model build its learner, and put it and the mixtures on ``device``."""
    import torch

    train_features = np.asarray(train.features, dtype=np.float32)
    train_props = np.asarray(train.proportions, dtype=np.float32)
    val_features = np.asarray(val.features, dtype=np.float32)
    val_props = np.asarray(val.proportions, dtype=np.float64)
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    # held-out mixtures for learners that calibrate after training (HP-VADE's NNLS blend)
    context.extra["val_mixtures"] = (val_features, val_props)
    learner: Learner = module_for(model_name).make_learner(train, signature, settings, context)
    learner.module.to(device)
    tensors = TrainingTensors(
        device=device,
        train_x=torch.from_numpy(train_features).to(device),
        train_p=torch.from_numpy(train_props).to(device),
        val_x=torch.from_numpy(val_features).to(device),
        val_p=torch.from_numpy(val_props.astype(np.float32)).to(device),
        val_props=val_props,
        cell_types=list(map(str, signature.columns)),
        aux_train={k: v.to(device) for k, v in learner.aux_train.items()},
        aux_val={k: v.to(device) for k, v in learner.aux_val.items()},
    )
    return learner, tensors


def autocast_dtype(device, settings: dict):
    """The autocast dtype of a run: bf16 on CUDA with ``mixed_precision`` (fp16 where the GPU has no
    bf16), None (fp32) on the CPU or without ``mixed_precision``."""
    import torch

    if device.type != "cuda" or not settings["mixed_precision"]:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_optimisation(module, settings: dict, device) -> Optimisation:
    """AdamW over the trainable parameters, the warm-up/cosine schedule, mixed precision on CUDA."""
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(settings["learning_rate"]), weight_decay=float(settings["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_factor(settings["lr_schedule"], int(settings["warmup_epochs"]), int(settings["epochs"]))
    )
    amp_dtype = autocast_dtype(device, settings)
    use_amp = amp_dtype is not None
    amp_dtype = amp_dtype or torch.float16  # unused without autocast
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return Optimisation(params, optimizer, scheduler, scaler, max(1, int(settings["gradient_accumulation"])),
                        float(settings["grad_clip"] or 0), use_amp, amp_dtype)


def resume(outputs: dict, identity: dict, module, optimisation: Optimisation, epochs: int) -> Progress:
    """The progress stored in ``outputs["last"]`` when it was made by the same run, else a fresh start."""
    progress = Progress()
    resumed = _try_resume(outputs.get("last"), identity)
    if resumed is None:
        return progress
    module.load_state_dict(resumed["module"])
    optimisation.optimizer.load_state_dict(resumed["optimizer"])
    optimisation.scheduler.load_state_dict(resumed["scheduler"])
    progress.start_epoch = int(resumed["epoch"]) + 1
    progress.best_loss, progress.bad_epochs = float(resumed["best_loss"]), int(resumed["bad_epochs"])
    progress.rows = list(resumed["history"])
    best_path = outputs.get("best")
    if best_path and Path(best_path).exists():
        progress.best_checkpoint = read_checkpoint(best_path)
    log.info("resuming from %s at epoch %d (best val loss so far %.6g)", outputs["last"], progress.start_epoch, progress.best_loss)
    if resumed.get("stopped"):
        progress.start_epoch = epochs + 1  # the run had already finished (early stop); nothing to do
    return progress


# --------------------------------------------------------------------------- one epoch
def _epoch_seed(seed: int, epoch: int) -> int:
    """Per-epoch seeds: an interrupted and resumed run sees the same batches and dropout masks as
    an uninterrupted one."""
    return seed * 100_003 + epoch


def train_one_epoch(learner: Learner, tensors: TrainingTensors, optimisation: Optimisation, settings: dict, seed: int,
                    epoch: int, label: str) -> tuple[dict, float]:
    """One pass over the shuffled training mixtures, then the schedule's step.

    Returns the mean of each loss term (and ``total``) over the batches, and the epoch's learning rate.
    """
    import torch

    generator = torch.Generator(device="cpu").manual_seed(_epoch_seed(seed, epoch))
    torch.manual_seed(_epoch_seed(seed, epoch))
    learner.module.train()
    batch_size, aux_batch = int(settings["batch_size"]), int(settings["aux_batch_size"])
    order = torch.randperm(len(tensors.train_x), generator=generator)
    n_batches = max(1, len(order) // batch_size)  # drop the ragged last batch
    sums: dict[str, float] = {}
    for b in _progress_bar(range(n_batches), label):
        idx = order[b * batch_size : (b + 1) * batch_size].to(tensors.device)
        batch = {"features": tensors.train_x[idx], "proportions": tensors.train_p[idx],
                 **_draw_aux(tensors.aux_train, aux_batch, generator)}
        terms, total = _optimisation_step(learner, batch, optimisation, tensors.device, b, n_batches, epoch)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        sums["total"] = sums.get("total", 0.0) + float(total.detach())
    lr = optimisation.optimizer.param_groups[0]["lr"]
    optimisation.scheduler.step()
    return {k: v / n_batches for k, v in sums.items()}, lr


def _progress_bar(batches, label: str):
    if not sys.stderr.isatty():
        return batches
    from tqdm import tqdm

    return tqdm(batches, desc=label, leave=False, file=sys.stderr)


def _optimisation_step(learner: Learner, batch: dict, optimisation: Optimisation, device, b: int, n_batches: int, epoch: int):
    """Loss of batch ``b`` and its backward pass; an optimiser step every ``accumulate`` batches."""
    import torch

    accumulate = optimisation.accumulate
    if b % accumulate == 0:
        optimisation.optimizer.zero_grad(set_to_none=True)
    with optimisation.autocast(device):
        terms = learner.loss_terms(batch)
    _check_finite(terms, epoch, "train")
    total = _weighted_total(terms, learner.loss_weights)
    optimisation.scaler.scale(total / accumulate).backward()
    if (b + 1) % accumulate == 0 or b + 1 == n_batches:
        if optimisation.grad_clip:
            optimisation.scaler.unscale_(optimisation.optimizer)
            torch.nn.utils.clip_grad_norm_(optimisation.params, optimisation.grad_clip)
        optimisation.scaler.step(optimisation.optimizer)
        optimisation.scaler.update()
    return terms, total


def evaluate(learner: Learner, tensors: TrainingTensors, optimisation: Optimisation, settings: dict, seed: int,
             epoch: int) -> tuple[dict, dict]:
    """Validation loss terms (plus ``total`` and ``selection``) and metrics of the predicted proportions."""
    import torch

    learner.module.eval()
    generator = torch.Generator(device="cpu").manual_seed(_epoch_seed(seed, epoch) + 50_000)
    aux = _draw_aux(tensors.aux_val, max(int(settings["aux_batch_size"]), 1), generator)
    batch = {"features": tensors.val_x, "proportions": tensors.val_p, **aux}
    with torch.no_grad(), optimisation.autocast(tensors.device):
        terms = learner.loss_terms(batch)
        pred = learner.predict(tensors.val_x)
    val_terms = {name: float(value.float()) for name, value in terms.items()}
    val_terms["total"] = float(_weighted_total(terms, learner.loss_weights))
    chosen = learner.selection_terms or tuple(learner.loss_weights)
    val_terms["selection"] = float(_weighted_total(terms, {k: learner.loss_weights[k] for k in chosen}))
    _check_finite({k: torch.tensor(v) for k, v in val_terms.items()}, epoch, "validation")
    metrics = compute_metrics(tensors.val_props, pred.float().cpu().numpy().astype(np.float64), tensors.cell_types)
    return val_terms, metrics


def epoch_row(epoch: int, train_means: dict, val_terms: dict, metrics: dict, lr: float, seconds: float) -> dict:
    """One row of the training log."""
    row = {"epoch": epoch}
    row.update({f"train_{k}": v for k, v in train_means.items()})
    row.update({f"val_{k}": v for k, v in val_terms.items()})
    row.update({"val_mae": metrics["mae"], "val_mean_r": metrics["mean_r"], "lr": lr, "seconds": seconds})
    return row


def select_best(progress: Progress, row: dict, settings: dict) -> bool:
    """Whether ``row`` improves on the best epoch by more than ``min_delta``; updates the best
    score, the patience counter and ``progress.stopped`` (early stopping)."""
    score = _selection_score(row, settings["selection_metric"])
    improved = score < progress.best_loss - float(settings["min_delta"])
    if improved:
        progress.best_loss, progress.bad_epochs = score, 0
    else:
        progress.bad_epochs += 1
    progress.stopped = progress.bad_epochs >= int(settings["patience"])
    return improved


def save_checkpoints(progress: Progress, learner: Learner, optimisation: Optimisation, improved: bool, row: dict,
                     identity: dict, run_provenance: dict, outputs: dict) -> None:
    """The epoch's model as the new best checkpoint (if ``improved``) and as ``last``, with the
    state a resumed run needs."""
    epoch = row["epoch"]
    fitted = learner.fitted()
    if improved:
        progress.best_checkpoint = fitted.checkpoint(
            {**run_provenance, "epoch": epoch, "val_loss": progress.best_loss, "val_mae": row["val_mae"]}
        )
        if outputs.get("best"):
            save_checkpoint(progress.best_checkpoint, outputs["best"])
    if outputs.get("last"):
        last = fitted.checkpoint({**run_provenance, "epoch": epoch, "val_loss": row["val_total"]})
        last["resume"] = {
            "identity": identity,
            "module": learner.module.state_dict(),
            "optimizer": optimisation.optimizer.state_dict(),
            "scheduler": optimisation.scheduler.state_dict(),
            "epoch": epoch,
            "best_loss": progress.best_loss,
            "bad_epochs": progress.bad_epochs,
            "history": progress.rows,
            "stopped": progress.stopped,
        }
        save_checkpoint(last, outputs["last"])


def log_epoch(row: dict, improved: bool, rows: list[dict], writer, history_path) -> None:
    """The training log file so far, TensorBoard scalars and the log line (``*``: a new best)."""
    if history_path:
        write_history(rows, history_path)
    if writer is not None:
        for key, value in row.items():
            if key != "epoch":
                writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
    log.info("%s%s", _format_row(row), "  *" if improved else "")


def finish(progress: Progress, learner: Learner, run_provenance: dict, outputs: dict) -> None:
    """Make sure a best checkpoint exists and the training log is complete."""
    if progress.best_checkpoint is None:  # resumed a finished run without a best file on disk
        progress.best_checkpoint = learner.fitted().checkpoint(run_provenance)
        if outputs.get("best"):
            save_checkpoint(progress.best_checkpoint, outputs["best"])
    if outputs.get("history"):
        write_history(progress.rows, outputs["history"])


def _log_best_epoch(rows: list[dict], selection_metric: str) -> None:
    if not rows:
        return
    best_row = min(rows, key=lambda r: _selection_score(r, selection_metric))
    log.info("best epoch %d: val loss %.6g, val MAE %.4f, val mean r %.3f; %.1f s over %d epochs",
             best_row["epoch"], best_row["val_selection"], best_row["val_mae"], best_row["val_mean_r"],
             sum(r["seconds"] for r in rows), len(rows))


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
def subsample_rows(n: int, max_cells: int | None, seed: int) -> np.ndarray:
    """Sorted positions of at most ``max_cells`` of ``n`` cells, drawn without replacement with
    ``numpy.random.default_rng(seed)``: the cells HP-VADE's VAE branch keeps (all when
    ``n <= max_cells`` or ``max_cells`` is None). Drawn before any cell is read, so that only
    these are read and normalised."""
    if max_cells is None or n <= max_cells:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_cells, replace=False))


def read_training_cells(reference_path, split_path, feature_names, cell_types, label_key="cell_type", counts_layer=None,
                        labels=None, gene_column=None, max_cells=None, seed=0):
    """CPM of the train- and val-pool single cells over ``feature_names`` (CPM over all genes).

    Returns (cells_train, labels_train, cells_val, labels_val); labels are indices into cell_types.
    With ``max_cells``, each pool keeps ``subsample_rows(pool size, max_cells, seed)`` of its
    cells, chosen before reading: only those rows are read from the reference (a chunk at a
    time), so memory does not grow with the reference beyond ``max_cells`` cells.
    """
    reference = open_reference(reference_path, label_key=label_key, counts_layer=counts_layer, labels=labels, gene_column=gene_column)
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
        keep = keep[subsample_rows(len(keep), max_cells, seed)]
        blocks = [cpm(block)[:, gene_index].tocsr().astype(np.float32) for _, block in reference.chunks(keep)]
        cells = sp.csr_matrix(sp.vstack(blocks, format="csr"))
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
    if modality == "rna" and reference_path and split_path and getattr(module_for(model_name), "USES_CELLS", False):
        # the cells the model keeps (its max_cells) are chosen before the reference is read
        max_cells = resolve_settings(model_name, settings).get("max_cells")
        cells = read_training_cells(reference_path, split_path, features, list(signature.columns),
                                    dataset.get("label_key", "cell_type"), dataset.get("counts_layer"),
                                    dataset.get("labels"), dataset.get("gene_column"),
                                    max_cells=None if max_cells is None else int(max_cells), seed=seed)
        context.cells_train, context.labels_train, context.cells_val, context.labels_val = cells
    provenance = {"inputs": {k: str(v) for k, v in inputs.items() if v}, "input_checksums": checksums, "dataset": dict(dataset),
                  "reference_cell_size": reference_cell_size(signature)}
    train_learner(model_name, train, val, signature, settings, seed, context=context, outputs=outputs, provenance=provenance)
