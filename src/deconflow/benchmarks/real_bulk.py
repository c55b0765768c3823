"""What was tried to make HP-VADE hold up on real bulk cohorts, measured on a finished run.

Reads a run's checkpoints and validation mixtures, the bulks with measured fractions and their
``truth_groups`` from the config (``--bulk``; default: every bulk of the dataset that has
``truth``), and prints one table per cohort (CCC, mean group r, MAE after renormalising to the
groups, as ``evaluate_bulk`` scores them; per-group r), then one table of the mean over the
cohorts per variant beside the variant's figures on the second half of the *validation*
mixtures (``val_*``, the same for every cohort; test mixtures are never read). Variants:

- the run's nnls and hpvade, and HP-VADE's three sources alone (encoder, linear-fit NNLS prior,
  all-gene NNLS prior);
- the stacking refitted on the first half of the validation mixtures, with and without the
  all-gene prior (``train.hpvade.all_gene_prior``), clean and under a simulated platform shift
  (per-gene log-normal factors, ``train.hpvade.blend_shift_sd``);
- the nnls fit made robust to outlier genes (Huber / bisquare reweighting, 10 % / 25 % of genes
  trimmed), and HP-VADE falling back to its linear-fit prior for samples whose all-gene relative
  residual is beyond any validation mixture's, also scored on validation mixtures under a
  simulated shift (gated vs stacking vs the prior alone);
- extra HP-VADE checkpoints (``--checkpoint NAME=PATH``, e.g. trained with augmentation);
- TAPE-style adaptation at deconvolution: the encoder fine-tuned on each cohort's unlabeled bulk
  so that the initial signature reconstructs it (the linear fit's weighted objective), anchored
  to its trained weights;
- the pipeline's answer with the adaptation to each cohort at deconvolution time
  (``deconflow.models.adaptation``; the CLI's default), beside the run's nnls, hpvade not adapted
  and scaden, with the share of samples that fell back to the linear fit, and the wall time of
  adapting 20 and 100 samples (``--adapt-timing``);
- a per-group scale calibration fitted on labelled samples, scored leave-one-sample-out. This
  uses the cohort's truth, so it is only a diagnostic of how much of the error is a per-group
  scale bias (it is not a mode of the pipeline).

Proportions are converted with a bulk's ``cell_mrna`` table when it has one, as the run's
deconvolution does (``--no-cell-mrna``: calibrated to the reference for every cohort); a
cohort without such a table is scored on the reference-calibrated fractions either way.

    python -m deconflow.benchmarks.real_bulk --results results/pbmc --dataset pbmc [--cohorts-dir ../shared/realbulk] [--bulk daism monaco] [--only-adaptation]
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
import yaml
from scipy.optimize import minimize, nnls

from ..cell_content import checkpoint_cell_size, read_cell_mrna, to_bulk_cell_fractions
from ..deconvolve import align_bulk
from ..errors import DeconflowError
from ..evaluation import compute_metrics
from ..io import read_bulk, read_mixtures
from ..models import load_model
from ..models.base import predict_in_batches, read_checkpoint
from ..models.hpvade import BLEND_SHIFT_SEED, augment, blend, fit_blend_weights
from ..config import add_cohorts
from ..models.nnls import cell_fractions
from ..truth import group_sums, named_bulks, read_truth, renormalise_rows
from .common import print_table


@dataclass
class Cohort:
    """One named bulk with measured fractions, scored as ``evaluate_bulk`` scores it.

    ``measured``: samples x groups, renormalised to the ``truth_groups``. ``shares`` turns a
    model's cell fractions (reference-calibrated, as every model gives them) into renormalised
    group shares: converted with the bulk's ``cell_mrna`` table when it has one and
    ``reference_size`` is given (as the run's deconvolution does), then summed over
    ``truth_groups``.
    """

    name: str
    entry: dict
    bulk: pd.DataFrame
    groups: list
    measured: np.ndarray
    reference_size: np.ndarray | None = None
    content: np.ndarray | None = None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """--config, --dataset, --bulk (the cohorts) and --results (the finished run to read)."""
        parser.add_argument("--config", default="config/config.yaml")
        parser.add_argument("--dataset", default="pbmc")
        parser.add_argument("--results", default="results/pbmc")
        parser.add_argument("--bulk", nargs="+", default=None, metavar="NAME",
                            help="bulks with `truth` to score (default: every one of the dataset)")
        parser.add_argument("--cohorts-dir", default=None, metavar="FOLDER",
                            help="also score the cohorts of --cohorts-file read from FOLDER, as the workflow's "
                                 "`cohorts_dir` key does (e.g. ../shared/realbulk: Monaco 2019, SDY67)")
        parser.add_argument("--cohorts-file", default=None, metavar="YAML",
                            help="cohorts file for --cohorts-dir (default: the config's `cohorts_file`, else config/cohorts.yaml)")

    @staticmethod
    def names(config_path, dataset: str, requested=None, cohorts_dir=None, cohorts_file=None) -> list[str]:
        """The cohorts to score: ``requested`` (checked to be bulks with ``truth``) or, when None,
        every bulk of ``dataset`` with ``truth`` in config order.

        Raises DeconflowError (naming the config) when a requested bulk is missing or has no
        truth, or when the dataset has no bulk with truth at all. ``cohorts_dir`` /
        ``cohorts_file``: the cohorts added as ``deconflow.config.add_cohorts`` adds them.
        """
        bulks = named_bulks(_dataset_config(config_path, dataset, cohorts_dir, cohorts_file).get("bulk"))
        with_truth = [name for name, entry in bulks.items() if entry.get("truth")]
        if requested is None:
            if not with_truth:
                raise DeconflowError(config_path, f"dataset {dataset!r} has no bulk with `truth`",
                                     "add a bulk with `truth` and `truth_groups` to the dataset, or choose another --dataset")
            return with_truth
        for name in requested:
            if name not in with_truth:
                raise DeconflowError(config_path, f"dataset {dataset!r} has no bulk {name!r} with `truth`",
                                     f"pass --bulk with some of: {', '.join(with_truth) or '(none)'}")
        return list(requested)

    @classmethod
    def load(cls, config_path, dataset: str, name: str, reference_size=None, cell_types=None,
             cohorts_dir=None, cohorts_file=None) -> "Cohort":
        """``reference_size`` None: no ``cell_mrna`` conversion (``--no-cell-mrna``)."""
        entry = named_bulks(_dataset_config(config_path, dataset, cohorts_dir, cohorts_file)["bulk"])[name]
        groups = list(entry["truth_groups"])
        bulk = read_bulk(entry["path"])
        truth = read_truth(entry["truth"]).loc[bulk.columns.astype(str)]
        content = None
        if entry.get("cell_mrna") and reference_size is not None:
            content = read_cell_mrna(entry["cell_mrna"], cell_types)
        else:
            reference_size = None
        return cls(name, entry, bulk, groups, renormalise_rows(truth[groups]).to_numpy(), reference_size, content)

    @classmethod
    def load_all(cls, args: argparse.Namespace, reference_size=None, cell_types=None) -> list["Cohort"]:
        """Every cohort ``args`` name (``add_arguments``), in order."""
        cohorts = (getattr(args, "cohorts_dir", None), getattr(args, "cohorts_file", None))
        return [cls.load(args.config, args.dataset, name, reference_size, cell_types, *cohorts)
                for name in cls.names(args.config, args.dataset, args.bulk, *cohorts)]

    @staticmethod
    def any_cell_mrna(args: argparse.Namespace) -> bool:
        """Whether any cohort ``args`` name has a ``cell_mrna`` table."""
        cohorts = (getattr(args, "cohorts_dir", None), getattr(args, "cohorts_file", None))
        bulks = named_bulks(_dataset_config(args.config, args.dataset, *cohorts).get("bulk"))
        return any(bulks[name].get("cell_mrna") for name in Cohort.names(args.config, args.dataset, args.bulk, *cohorts))

    def describe(self) -> str:
        """``'daism' (20 samples, 5 groups, no cell_mrna)``."""
        return (f"{self.name!r} ({len(self.measured)} samples, {len(self.groups)} groups, "
                f"{'cell_mrna applied' if self.content is not None else 'no cell_mrna'})")

    def shares(self, proportions: np.ndarray, cell_types) -> np.ndarray:
        if self.content is not None:
            proportions = to_bulk_cell_fractions(proportions, self.reference_size, self.content)
        frame = pd.DataFrame(proportions, columns=cell_types)
        return renormalise_rows(group_sums(frame, self.entry["truth_groups"])).to_numpy()


def _dataset_config(config_path, dataset: str, cohorts_dir=None, cohorts_file=None) -> dict:
    """The config's ``dataset`` section, with the cohorts of ``cohorts_dir`` added (``add_cohorts``)."""
    with open(config_path) as handle:
        config = yaml.safe_load(handle) or {}
    datasets = add_cohorts(config, cohorts_dir, cohorts_file).get("datasets") or {}
    if dataset not in datasets:
        raise DeconflowError(config_path, f"no dataset {dataset!r}", f"pass --dataset with one of: {', '.join(datasets)}")
    return datasets[dataset]


def sources(net, features: np.ndarray) -> list[torch.Tensor]:
    """HP-VADE's encoder, linear-fit NNLS prior and all-gene NNLS prior, each samples x types."""
    x = np.asarray(features, dtype=np.float32)
    with torch.no_grad():
        encoder = torch.softmax(net.proportion_logits(torch.from_numpy(x)).float(), dim=1)
    n_types = encoder.shape[1]
    return [encoder] + [torch.from_numpy(predict_in_batches(prior, x, n_types)) for prior in (net.nnls_prior, net.plain_prior)]


def stacked(parts: list[torch.Tensor], coefs) -> np.ndarray:
    a, b, c = coefs
    return blend(parts[0], torch.stack(parts[1:]), a, torch.stack([b, c])[:, None, :]).numpy()


def group_scores(predicted: np.ndarray, measured: np.ndarray, groups) -> dict:
    """Renormalised group shares -> CCC, mean group r, MAE and r per group (as evaluate_bulk scores them)."""
    metrics = compute_metrics(measured, predicted, groups)
    return {"ccc": metrics["ccc"], "mean_group_r": metrics["mean_r"], "mae": metrics["mae"],
            **{f"r {g}": r for g, r in metrics["per_cell_type_r"].items()}}


def pseudobulk_scores(predicted: np.ndarray, truth: np.ndarray) -> dict:
    metrics = compute_metrics(truth, predicted, range(truth.shape[1]))
    return {"val_r": metrics["mean_r"], "val_ccc": metrics["ccc"], "val_mae": metrics["mae"]}


def loo_scale_calibration(shares: np.ndarray, measured: np.ndarray, ridge: float = 1e-3) -> np.ndarray:
    """Each sample's group shares times per-group factors fitted on the other samples, renormalised."""
    def fit(train_shares, train_measured):
        def loss(log_factors):
            q = train_shares * np.exp(log_factors)
            q = q / q.sum(axis=1, keepdims=True)
            return float(((q - train_measured) ** 2).sum() + ridge * (log_factors**2).sum())
        return minimize(loss, np.zeros(shares.shape[1]), method="L-BFGS-B").x

    out = np.empty_like(shares)
    for i in range(len(shares)):
        keep = np.arange(len(shares)) != i
        q = shares[i] * np.exp(fit(shares[keep], measured[keep]))
        out[i] = q / q.sum()
    return out


def adapt_encoder(net, features: np.ndarray, steps: int, learning_rate: float, anchor: float, seed: int = 0):
    """A copy of ``net`` whose encoder is fine-tuned so that S0·p reconstructs the bulk (weighted)."""
    torch.manual_seed(seed)
    adapted = copy.deepcopy(net).eval()
    start = [p.detach().clone() for p in adapted.encoder.parameters()]
    optimizer = torch.optim.Adam(adapted.encoder.parameters(), lr=learning_rate)
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))
    observed = ~torch.isnan(x)
    # the first linear-fit design only (the variant predates the marker-set ensemble)
    target = torch.nan_to_num(x) * adapted.prior_root_weight[0] / adapted.prior_scale[0]
    for _ in range(steps):
        p = torch.softmax(adapted.proportion_logits(x), dim=1)
        mrna = p * adapted.prior_library_size
        mrna = mrna / mrna.sum(dim=1, keepdim=True)
        residual = (mrna @ adapted.prior_signature[0].T - target) * observed
        loss = residual.pow(2).sum(dim=1).mean() / target.pow(2).sum(dim=1).mean()
        loss = loss + anchor * sum((p - p0).pow(2).sum() for p, p0 in zip(adapted.encoder.parameters(), start))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return adapted


def robust_nnls(model, features: np.ndarray, kind: str, tuning: float, iterations: int = 10) -> np.ndarray:
    """The nnls checkpoint's weighted fit made robust to outlier genes by iterative reweighting:
    ``huber`` / ``bisquare`` (tuning constant in MADs of the weighted residuals) or ``trim``
    (drop the ``tuning`` share of genes with the largest residuals, FARDEEP-like); cell fractions."""
    design = model.signature[model.rows] / model.scale
    out = []
    for x in np.asarray(features, dtype=np.float64)[:, model.rows] / model.scale:
        seen = np.isfinite(x)
        # one fit with the designs' mean weights (the variant predates the marker-set ensemble)
        A, b, base = design[seen], x[seen], model.weights.mean(axis=0)[seen]
        weights = base.copy()
        for _ in range(iterations):
            root = np.sqrt(weights)
            coef, _ = nnls(A * root[:, None], b * root, maxiter=50 * A.shape[1])
            residual = (b - A @ coef) * np.sqrt(base)
            u = np.abs(residual) / (1.4826 * np.median(np.abs(residual - np.median(residual))) + 1e-12)
            if kind == "huber":
                weights = base * np.minimum(1.0, tuning / np.maximum(u, 1e-12))
            elif kind == "bisquare":
                weights = base * np.where(u < tuning, (1 - (u / tuning) ** 2) ** 2, 0.0)
            else:
                weights = base * (u <= np.quantile(u, 1 - tuning))
        out.append(coef / max(coef.sum(), 1e-12))
    return cell_fractions(np.array(out), model.library_size)


def relative_residual(net, features: np.ndarray) -> np.ndarray:
    """HP-VADE's all-gene relative residual per sample (``HPVADENet.plain_fit``), as numpy."""
    return predict_in_batches(lambda x: net.plain_fit(x)[1][:, None], features, 1)[:, 0]


@dataclass
class Run:
    """A finished run's nnls and hpvade checkpoints and its validation mixtures in two halves:
    ``fit_*`` (first half: refits, the fallback threshold) and ``score_*`` (second half: the
    ``val_*`` columns). Features are CPM, mixtures x genes; proportions mixtures x types."""

    nnls: object
    hpvade: object
    fit_x: np.ndarray
    fit_p: torch.Tensor
    score_x: np.ndarray
    score_p: np.ndarray

    @classmethod
    def load(cls, results) -> "Run":
        val = read_mixtures(f"{results}/pseudobulk/val.h5")
        half = len(val.proportions) // 2
        return cls(load_model(f"{results}/models/nnls/checkpoint_best.pt"),
                   load_model(f"{results}/models/hpvade/checkpoint_best.pt"),
                   val.features[:half].astype(np.float32), torch.from_numpy(val.proportions[:half]),
                   val.features[half:].astype(np.float32), val.proportions[half:])

    @cached_property
    def val_parts(self) -> list[torch.Tensor]:
        """HP-VADE's three sources on the scored validation half (``sources``), computed once."""
        return sources(self.hpvade.net, self.score_x)

    @property
    def run_coefs(self):
        """The run's stacking weights (encoder, linear-fit prior, all-gene prior)."""
        net = self.hpvade.net
        return net.blend_net, net.blend_nnls, net.blend_plain


@dataclass
class CohortInputs:
    """One cohort's bulk aligned to each run model (samples x model genes) and the run models'
    predictions on it: cell fractions of nnls and hpvade, HP-VADE's three sources."""

    cohort: Cohort
    features: np.ndarray
    nnls_x: np.ndarray
    nnls_real: np.ndarray
    hp_real: np.ndarray
    real_parts: list


def load_cohort_inputs(run: Run, cohort: Cohort) -> CohortInputs:
    """Align ``cohort``'s bulk to the run's models and predict it with each."""
    features, _ = align_bulk(cohort.bulk, run.hpvade, 1000, source=cohort.entry["path"])
    nnls_x, _ = align_bulk(cohort.bulk, run.nnls, 1000, source=cohort.entry["path"])
    # hpvade.predict: the stacking, or the linear-fit prior beyond the fallback threshold
    return CohortInputs(cohort, features, nnls_x, run.nnls.predict_partial(nnls_x), run.hpvade.predict(features),
                        sources(run.hpvade.net, features))


class Scores:
    """The benchmark's rows: per cohort, the variant's real scores (``group_scores``); once, its
    scores on the scored validation half (``pseudobulk_scores``); ``order``: variants as added."""

    def __init__(self, cohorts: list[CohortInputs], score_p: np.ndarray):
        self.cohorts, self.score_p = cohorts, score_p
        self.real = {data.cohort.name: [] for data in cohorts}
        self.val, self.order = [], []

    def add(self, name: str, real=None, cell_types=None, val=None, fallback=None) -> None:
        """``real``: one cell-fraction matrix per cohort (samples x ``cell_types``), or None;
        ``val``: cell fractions of the scored validation half, or None; ``fallback``: per cohort
        the share of samples that got the linear-fit fallback (column ``fallback``)."""
        self.add_shares(name, None if real is None else [data.cohort.shares(p, cell_types)
                                                         for data, p in zip(self.cohorts, real)], val, fallback)

    def add_shares(self, name: str, shares=None, val=None, fallback=None) -> None:
        """As ``add`` with group shares per cohort (samples x the cohort's groups) instead."""
        self.order.append(name)
        for i, (data, cohort_shares) in enumerate(zip(self.cohorts, shares or [])):
            cohort = data.cohort
            extra = {} if fallback is None else {"fallback": fallback[i]}
            self.real[cohort.name].append({"variant": name, **extra,
                                           **group_scores(cohort_shares, cohort.measured, cohort.groups)})
        if val is not None:
            self.val.append({"variant": name, **pseudobulk_scores(val, self.score_p)})

    def cohort_table(self, name: str) -> pd.DataFrame:
        return pd.DataFrame(self.real[name])

    def mean_table(self) -> pd.DataFrame:
        table = mean_over_cohorts({name: self.cohort_table(name) for name in self.real}, pd.DataFrame(self.val))
        return table.set_index("variant").loc[self.order].reset_index()


#: the real figures averaged over cohorts in the mean table
MEAN_COLUMNS = ("ccc", "mean_group_r", "mae", "fallback")


def mean_over_cohorts(per_cohort: dict[str, pd.DataFrame], val: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per variant: ``MEAN_COLUMNS`` averaged over the cohorts (each cohort counts once,
    whatever its number of samples; NaN unless the variant was scored on every cohort), then the
    ``val_*`` columns of ``val`` (one row per variant, cohort-independent) when given.

    ``per_cohort``: cohort name -> a frame with ``variant`` and ``MEAN_COLUMNS`` columns. Variants
    keep the order of their first appearance (cohorts in order, then ``val``).
    """
    stacked_rows = pd.concat([frame.reindex(columns=["variant", *MEAN_COLUMNS]).assign(cohort=name)
                              for name, frame in per_cohort.items()])
    wide = stacked_rows.pivot(index="variant", columns="cohort", values=list(MEAN_COLUMNS))
    wide = wide.reindex(columns=pd.MultiIndex.from_product([MEAN_COLUMNS, list(per_cohort)]))
    means = pd.DataFrame({column: wide[column].astype(float).mean(axis=1, skipna=False) for column in MEAN_COLUMNS})
    variants = list(dict.fromkeys(list(stacked_rows["variant"]) + ([] if val is None or val.empty else list(val["variant"]))))
    table = means.reindex(variants)
    if table["fallback"].isna().all():  # no variant reported its fallback share
        table = table.drop(columns="fallback")
    if val is not None and not val.empty:
        table = table.join(val.set_index("variant"))
    return table.rename_axis("variant").reset_index()


def run_model_rows(run: Run, cohorts: list[CohortInputs], scores: Scores) -> None:
    """The run's nnls and hpvade as the pipeline predicts, and hpvade's stacking without its fallback."""
    scores.add("nnls (run)", [c.nnls_real for c in cohorts], run.nnls.cell_types, run.nnls.predict(run.score_x))
    types = run.hpvade.cell_types
    scores.add("hpvade (run)", [c.hp_real for c in cohorts], types, run.hpvade.predict(run.score_x))
    scores.add("hpvade stacking (no fallback)", [stacked(c.real_parts, run.run_coefs) for c in cohorts], types,
               stacked(run.val_parts, run.run_coefs))


def source_rows(run: Run, cohorts: list[CohortInputs], scores: Scores) -> None:
    """HP-VADE's encoder, linear-fit prior and all-gene prior, each alone."""
    for k, name in enumerate(["encoder", "linear-fit prior", "all-gene prior"]):
        scores.add(f"hpvade {name} alone", [c.real_parts[k].numpy() for c in cohorts], run.hpvade.cell_types,
                   run.val_parts[k].numpy())


def stacking_refit_rows(run: Run, cohorts: list[CohortInputs], scores: Scores, shift_sds) -> None:
    """The stacking refitted on the first validation half, clean and under each simulated shift,
    with and without the all-gene prior."""
    net, types = run.hpvade.net, run.hpvade.cell_types
    for shift_sd in [0.0] + list(shift_sds):
        x = run.fit_x
        if shift_sd > 0:
            x = augment(torch.from_numpy(run.fit_x), shift_sd, 0.0, torch.Generator().manual_seed(BLEND_SHIFT_SEED)).numpy()
        parts = sources(net, x)
        with_prior = fit_blend_weights(parts[0], parts[1], run.fit_p, parts[2])
        a, b = fit_blend_weights(parts[0], parts[1], run.fit_p)
        for label, coefs in [(", with all-gene prior", with_prior), ("", (a, b, torch.zeros_like(b)))]:
            scores.add(f"stacking refit on val half, shift sd {shift_sd}{label}",
                       [stacked(c.real_parts, coefs) for c in cohorts], types, stacked(run.val_parts, coefs))


def robust_nnls_rows(run: Run, cohorts: list[CohortInputs], scores: Scores) -> None:
    """The nnls fit reweighted against outlier genes (``robust_nnls``)."""
    for kind, tuning in [("huber", 1.345), ("bisquare", 4.685), ("trim", 0.1), ("trim", 0.25)]:
        scores.add(f"nnls robust fit: {kind} {tuning}", [robust_nnls(run.nnls, c.nnls_x, kind, tuning) for c in cohorts],
                   run.nnls.cell_types, robust_nnls(run.nnls, run.score_x, kind, tuning))


def fallback_gate_rows(run: Run, cohorts: list[CohortInputs], scores: Scores, shift_sds) -> dict[str, str]:
    """HP-VADE falling back to its linear-fit prior (solved exactly: ``linear_fit_model``, as the
    run's hpvade does beyond its threshold) where a sample is further from the signature than any
    mixture of the first validation half (this threshold, no margin), on each cohort and on the
    validation half clean and under simulated shifts (gated vs stacking vs the prior).
    Returns per cohort a note of how many samples the gate sends to the prior."""
    net, types, coefs = run.hpvade.net, run.hpvade.cell_types, run.run_coefs
    prior = run.hpvade.linear_fit_model()
    threshold = float(relative_residual(net, run.fit_x).max())
    gated = {}
    for shift_sd in [0.0] + list(shift_sds):
        x = run.score_x if shift_sd == 0 else augment(torch.from_numpy(run.score_x), shift_sd, 0.0,
                                                      torch.Generator().manual_seed(BLEND_SHIFT_SEED + 1)).numpy()
        parts, far = (run.val_parts if shift_sd == 0 else sources(net, x)), relative_residual(net, x) > threshold
        exact = prior.predict(x)
        gated[shift_sd] = (np.where(far[:, None], exact, stacked(parts, coefs)), parts, exact)
    notes, real = {}, []
    for c in cohorts:
        far = relative_residual(net, c.features) > threshold
        real.append(np.where(far[:, None], prior.predict_partial(c.features), c.hp_real))
        notes[c.cohort.name] = f"hpvade's fallback gate: residual > {threshold:.3f} for {int(far.sum())} of {len(far)} samples"
    scores.add(f"hpvade, linear-fit prior where residual > {threshold:.3f}", real, types, gated[0.0][0])
    for shift_sd in shift_sds:
        out, parts, exact = gated[shift_sd]
        for label, proportions in [("gated", out), ("stacking", stacked(parts, coefs)), ("linear-fit prior", exact)]:
            scores.add(f"val half under shift sd {shift_sd}: hpvade {label}", val=proportions)
    return notes


def checkpoint_rows(run: Run, cohorts: list[CohortInputs], scores: Scores, items) -> None:
    """Other HP-VADE checkpoints (``NAME=PATH``), as predicted and their encoder alone."""
    for item in items:
        name, path = item.split("=", 1)
        other = load_model(path)
        xs = [align_bulk(c.cohort.bulk, other, 1000, source=c.cohort.entry["path"])[0] for c in cohorts]
        scores.add(f"hpvade {name}", [other.predict_partial(x) for x in xs], other.cell_types, other.predict(run.score_x))
        scores.add(f"hpvade {name} encoder alone", [sources(other.net, x)[0].numpy() for x in xs], other.cell_types,
                   sources(other.net, run.score_x)[0].numpy())


def adaptation_rows(run: Run, cohorts: list[CohortInputs], scores: Scores, specs: str) -> None:
    """The encoder fine-tuned on each cohort's bulk (``adapt_encoder``; ``specs``:
    ``steps:learning_rate:anchor`` comma separated), alone and stacked; real cohorts only."""
    net, types = run.hpvade.net, run.hpvade.cell_types
    for spec in filter(None, specs.split(",")):
        steps, learning_rate, anchor = spec.split(":")
        parts = [sources(adapt_encoder(net, c.features, int(steps), float(learning_rate), float(anchor)), c.features)
                 for c in cohorts]
        label = f"({steps} steps, lr {learning_rate}, anchor {anchor})"
        scores.add(f"adapted encoder {label}", [p[0].numpy() for p in parts], types)
        scores.add(f"adapted encoder stacked {label}",
                   [stacked([p[0]] + c.real_parts[1:], run.run_coefs) for p, c in zip(parts, cohorts)], types)


def cohort_adaptation_rows(run: Run, cohorts: list[CohortInputs], scores: Scores, results, weights) -> dict[str, str]:
    """The pipeline's answers on each cohort: nnls, hpvade not adapted (the checkpoint as trained,
    its out-of-distribution fallback included) and adapted to the cohort (``HPVADEModel.adapted``
    with the default settings, as ``deconflow deconvolve`` does; the bulk's truth is not used), the
    adapted model with other ``encoder_weight``s, and scaden when the run has it; ``fallback``: the
    share of samples that got the linear fit alone. ``val_*``: the scored validation half
    deconvolved as one cohort. Returns per cohort the adaptation's log line."""
    from ..evaluation import features_for_model
    from ..models.adaptation import ADAPT_DEFAULTS
    from pathlib import Path

    hp, types = run.hpvade, run.hpvade.cell_types
    if not Path(f"{results}/pseudobulk/train.h5").is_file():
        return {c.cohort.name: f"no {results}/pseudobulk/train.h5: the adapted hpvade is not scored" for c in cohorts}
    train = read_mixtures(f"{results}/pseudobulk/train.h5")
    mixtures = (features_for_model(train, hp), train.proportions)
    scores.add("hpvade not adapted (run)", [hp.predict_partial(c.features) for c in cohorts], types, hp.predict(run.score_x),
               fallback=[float(hp.fallback_rows(c.features).mean()) for c in cohorts])
    adapted, notes = [], {}
    for c in cohorts:
        model, kind, note = hp.adapted(c.features, mixtures)
        adapted.append(model)
        notes[c.cohort.name] = note
    val_model = hp.adapted(run.score_x, mixtures)[0]
    for weight in [ADAPT_DEFAULTS["encoder_weight"]] + [w for w in weights if w != ADAPT_DEFAULTS["encoder_weight"]]:
        for model in adapted + [val_model]:
            model.encoder_weight = weight
        label = "hpvade adapted (CLI default)" if weight == ADAPT_DEFAULTS["encoder_weight"] else f"hpvade adapted, encoder weight {weight}"
        scores.add(label, [m.predict_partial(c.features) for m, c in zip(adapted, cohorts)], types, val_model.predict(run.score_x),
                   fallback=[float(m.fallback_rows(c.features).mean()) for m, c in zip(adapted, cohorts)])
    scaden_path = Path(f"{results}/models/scaden/checkpoint_best.pt")
    if scaden_path.is_file():
        scaden = load_model(scaden_path)
        xs = [align_bulk(c.cohort.bulk, scaden, 1000, source=c.cohort.entry["path"])[0] for c in cohorts]
        scores.add("scaden (run)", [scaden.predict_partial(x) for x in xs], scaden.cell_types, scaden.predict(run.score_x))
    return notes


def adaptation_timing(run: Run, cohorts: list[CohortInputs], results, sizes=(20, 100)) -> None:
    """Wall time of adapting HP-VADE to a cohort and answering it (``adapted`` + ``predict_partial``,
    one numerical thread as in ``deconflow deconvolve``), for cohorts of ``sizes`` samples made of
    the real cohorts' samples (repeated in turn)."""
    import time

    from ..evaluation import features_for_model
    from ..threads import fixed_threads

    train = read_mixtures(f"{results}/pseudobulk/train.h5")
    mixtures = (features_for_model(train, run.hpvade), train.proportions)
    pool = np.concatenate([c.features for c in cohorts])
    for size in sizes:
        x = pool[np.arange(size) % len(pool)]
        with fixed_threads():
            start = time.perf_counter()
            model = run.hpvade.adapted(x, mixtures)[0]
            model.predict_partial(x)
            seconds = time.perf_counter() - start
        print(f"adapting HP-VADE to {size} samples and answering them: {seconds:.1f} s (1 numerical thread)")


def calibration_rows(run: Run, cohorts: list[CohortInputs], scores: Scores) -> None:
    """A per-group scale fitted on each cohort's other samples (``loo_scale_calibration``; uses truth)."""
    types = run.hpvade.cell_types
    for name, predictions, cell_types in [("nnls", [c.nnls_real for c in cohorts], run.nnls.cell_types),
                                          ("hpvade", [c.hp_real for c in cohorts], types),
                                          ("hpvade encoder", [c.real_parts[0].numpy() for c in cohorts], types)]:
        scores.add_shares(f"{name} + per-group scale, leave-one-sample-out (uses truth)",
                          [loo_scale_calibration(c.cohort.shares(p, cell_types), c.cohort.measured)
                           for c, p in zip(cohorts, predictions)])


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    Cohort.add_arguments(parser)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="another HP-VADE checkpoint to score (its own stacking)")
    parser.add_argument("--no-cell-mrna", action="store_true",
                        help="score cell fractions calibrated to the reference, ignoring the bulks' `cell_mrna` tables")
    parser.add_argument("--shift-sd", type=float, nargs="*", default=[0.5, 1.0])
    parser.add_argument("--adapt", default="200:0.001:0,200:0.001:0.01,200:0.001:1",
                        help="TAPE-style encoder adaptation rows: steps:learning_rate:anchor, comma separated ('' for none)")
    parser.add_argument("--only-adaptation", action="store_true",
                        help="only nnls, hpvade not adapted / adapted, scaden (and --adapt-timing)")
    parser.add_argument("--encoder-weights", type=float, nargs="*", default=[1.0],
                        help="other encoder weights of the adapted answer to score (default: 1.0, the encoder alone)")
    parser.add_argument("--adapt-timing", action="store_true", help="print the wall time of adapting 20 and 100 samples")
    return parser.parse_args(argv)


def print_report(scores: Scores, notes: dict[str, str]) -> None:
    """One table per cohort, then the mean over cohorts with the ``val_*`` columns."""
    for data in scores.cohorts:
        cohort = data.cohort
        print(f"real bulk {cohort.describe()}, groups renormalised; {notes[cohort.name]}")
        print_table(scores.cohort_table(cohort.name))
        print()
    print(f"mean over {len(scores.cohorts)} cohorts ({', '.join(scores.real)}; each counts once); "
          f"val_*: second half of the validation mixtures ({len(scores.score_p)})")
    print_table(scores.mean_table())


def main(argv=None) -> int:
    args = parse_arguments(argv)
    run = Run.load(args.results)
    hpvade_path = f"{args.results}/models/hpvade/checkpoint_best.pt"
    reference_size = None  # the run's library sizes per type: read only for a bulk with a `cell_mrna` table
    if not args.no_cell_mrna and Cohort.any_cell_mrna(args):
        reference_size = checkpoint_cell_size(read_checkpoint(hpvade_path), hpvade_path)
    cohorts = [load_cohort_inputs(run, cohort) for cohort in Cohort.load_all(args, reference_size, run.hpvade.cell_types)]
    scores = Scores(cohorts, run.score_p)
    if args.only_adaptation:
        scores.add("nnls (run)", [c.nnls_real for c in cohorts], run.nnls.cell_types, run.nnls.predict(run.score_x))
        notes = cohort_adaptation_rows(run, cohorts, scores, args.results, args.encoder_weights)
        print_report(scores, notes)
        if args.adapt_timing:
            adaptation_timing(run, cohorts, args.results)
        return 0
    run_model_rows(run, cohorts, scores)
    adapted_notes = cohort_adaptation_rows(run, cohorts, scores, args.results, args.encoder_weights)
    source_rows(run, cohorts, scores)
    stacking_refit_rows(run, cohorts, scores, args.shift_sd)
    robust_nnls_rows(run, cohorts, scores)
    notes = fallback_gate_rows(run, cohorts, scores, args.shift_sd)
    checkpoint_rows(run, cohorts, scores, args.checkpoint)
    adaptation_rows(run, cohorts, scores, args.adapt)
    calibration_rows(run, cohorts, scores)
    print_report(scores, {name: "; ".join(filter(None, [note, adapted_notes.get(name)])) for name, note in notes.items()})
    if args.adapt_timing:
        adaptation_timing(run, cohorts, args.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
