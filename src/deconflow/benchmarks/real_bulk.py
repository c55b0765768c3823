"""What was tried to make HP-VADE hold up on a real bulk cohort, measured on a finished run.

Reads a run's checkpoints and validation mixtures, one bulk with measured fractions and its
``truth_groups`` from the config, and prints one row per variant (CCC, mean group r, MAE after
renormalising to the groups, as ``evaluate_bulk`` scores them; per-group r) beside the same
variant's figures on the second half of the *validation* mixtures (test mixtures are never read):

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
- TAPE-style adaptation at deconvolution: the encoder fine-tuned on the unlabeled bulk so that
  the initial signature reconstructs it (the linear fit's weighted objective), anchored to its
  trained weights;
- a per-group scale calibration fitted on labelled samples, scored leave-one-sample-out. This
  uses the cohort's truth, so it is only a diagnostic of how much of the error is a per-group
  scale bias (it is not a mode of the pipeline).

Proportions are converted with the bulk's ``cell_mrna`` table when it has one, as the run's
deconvolution does (``--no-cell-mrna``: calibrated to the reference, as before that table).

    python -m deconflow.benchmarks.real_bulk --results results/pbmc --dataset pbmc --bulk daism
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import yaml
from scipy.optimize import minimize, nnls

from ..cell_content import checkpoint_cell_size, read_cell_mrna, to_bulk_cell_fractions
from ..deconvolve import align_bulk
from ..evaluation import compute_metrics
from ..io import read_bulk, read_mixtures
from ..models import load_model
from ..models.base import predict_in_batches, read_checkpoint
from ..models.hpvade import BLEND_SHIFT_SEED, augment, blend, fit_blend_weights
from ..models.nnls import cell_fractions
from ..truth import group_sums, named_bulks, read_truth, renormalise_rows
from .common import print_table


@dataclass
class Cohort:
    """One named bulk with measured fractions, scored as ``evaluate_bulk`` scores it.

    ``shares`` turns a model's cell fractions (reference-calibrated, as every model gives them)
    into renormalised group shares: converted with the bulk's ``cell_mrna`` table when it has
    one and ``reference_size`` is given (as the run's deconvolution does), then summed over
    ``truth_groups``.
    """

    entry: dict
    bulk: pd.DataFrame
    groups: list
    measured: np.ndarray
    reference_size: np.ndarray | None = None
    content: np.ndarray | None = None

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """--config, --dataset, --bulk (the cohort) and --results (the finished run to read)."""
        parser.add_argument("--config", default="config/config.yaml")
        parser.add_argument("--dataset", default="pbmc")
        parser.add_argument("--results", default="results/pbmc")
        parser.add_argument("--bulk", default="daism")

    @classmethod
    def load(cls, config_path, dataset: str, name: str, reference_size=None, cell_types=None) -> "Cohort":
        """``reference_size`` None: no ``cell_mrna`` conversion (``--no-cell-mrna``)."""
        config = yaml.safe_load(open(config_path))
        entry = named_bulks(config["datasets"][dataset]["bulk"])[name]
        groups = list(entry["truth_groups"])
        bulk = read_bulk(entry["path"])
        truth = read_truth(entry["truth"]).loc[bulk.columns.astype(str)]
        content = None
        if entry.get("cell_mrna") and reference_size is not None:
            content = read_cell_mrna(entry["cell_mrna"], cell_types)
        else:
            reference_size = None
        return cls(entry, bulk, groups, renormalise_rows(truth[groups]).to_numpy(), reference_size, content)

    def shares(self, proportions: np.ndarray, cell_types) -> np.ndarray:
        if self.content is not None:
            proportions = to_bulk_cell_fractions(proportions, self.reference_size, self.content)
        frame = pd.DataFrame(proportions, columns=cell_types)
        return renormalise_rows(group_sums(frame, self.entry["truth_groups"])).to_numpy()


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    Cohort.add_arguments(parser)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="another HP-VADE checkpoint to score (its own stacking)")
    parser.add_argument("--no-cell-mrna", action="store_true",
                        help="score cell fractions calibrated to the reference, ignoring the bulk's `cell_mrna` table")
    parser.add_argument("--shift-sd", type=float, nargs="*", default=[0.5, 1.0])
    parser.add_argument("--adapt", default="200:0.001:0,200:0.001:0.01,200:0.001:1",
                        help="steps:learning_rate:anchor, comma separated ('' for none)")
    args = parser.parse_args(argv)

    hpvade_path = f"{args.results}/models/hpvade/checkpoint_best.pt"
    hpvade = load_model(hpvade_path)
    cohort = Cohort.load(args.config, args.dataset, args.bulk,
                         None if args.no_cell_mrna else checkpoint_cell_size(read_checkpoint(hpvade_path), hpvade_path),
                         hpvade.cell_types)
    bulk, entry, measured, groups, shares = cohort.bulk, cohort.entry, cohort.measured, cohort.groups, cohort.shares
    features, _ = align_bulk(bulk, hpvade, 1000, source=entry["path"])

    val = read_mixtures(f"{args.results}/pseudobulk/val.h5")
    half = len(val.proportions) // 2
    fit_x, fit_p = val.features[:half].astype(np.float32), torch.from_numpy(val.proportions[:half])
    score_x, score_p = val.features[half:].astype(np.float32), val.proportions[half:]

    rows = []

    def add(name, real_proportions, cell_types, val_proportions=None):
        row = {"variant": name, **group_scores(shares(real_proportions, cell_types), measured, groups)}
        if val_proportions is not None:
            row.update(pseudobulk_scores(val_proportions, score_p))
        rows.append(row)
        return row

    nnls = load_model(f"{args.results}/models/nnls/checkpoint_best.pt")
    nnls_x, _ = align_bulk(bulk, nnls, 1000, source=entry["path"])
    nnls_real = nnls.predict_partial(nnls_x)
    add("nnls (run)", nnls_real, nnls.cell_types, nnls.predict(score_x))
    types = hpvade.cell_types
    net = hpvade.net
    real_parts, val_parts = sources(net, features), sources(net, score_x)
    run_coefs = (net.blend_net, net.blend_nnls, net.blend_plain)
    hp_real = hpvade.predict(features)  # the stacking, or the linear-fit prior beyond the fallback threshold
    add("hpvade (run)", hp_real, types, hpvade.predict(score_x))
    add("hpvade stacking (no fallback)", stacked(real_parts, run_coefs), types, stacked(val_parts, run_coefs))
    for k, name in enumerate(["encoder", "linear-fit prior", "all-gene prior"]):
        add(f"hpvade {name} alone", real_parts[k].numpy(), types, val_parts[k].numpy())

    for shift_sd in [0.0] + list(args.shift_sd):
        x = fit_x
        if shift_sd > 0:
            x = augment(torch.from_numpy(fit_x), shift_sd, 0.0, torch.Generator().manual_seed(BLEND_SHIFT_SEED)).numpy()
        parts = sources(net, x)
        coefs = fit_blend_weights(parts[0], parts[1], fit_p, parts[2])
        add(f"stacking refit on val half, shift sd {shift_sd}, with all-gene prior", stacked(real_parts, coefs), types,
            stacked(val_parts, coefs))
        a, b = fit_blend_weights(parts[0], parts[1], fit_p)
        coefs = (a, b, torch.zeros_like(b))
        add(f"stacking refit on val half, shift sd {shift_sd}", stacked(real_parts, coefs), types, stacked(val_parts, coefs))

    for kind, tuning in [("huber", 1.345), ("bisquare", 4.685), ("trim", 0.1), ("trim", 0.25)]:
        add(f"nnls robust fit: {kind} {tuning}", robust_nnls(nnls, nnls_x, kind, tuning), nnls.cell_types,
            robust_nnls(nnls, score_x, kind, tuning))
    # fall back to the linear-fit prior where a sample is further from the signature than any
    # validation mixture of the first half (the threshold, no margin), for the bulk and for shifted
    # validation mixtures
    threshold = float(relative_residual(net, fit_x).max())
    gated = {}
    for shift_sd in [0.0] + list(args.shift_sd):
        x = score_x if shift_sd == 0 else augment(torch.from_numpy(score_x), shift_sd, 0.0,
                                                  torch.Generator().manual_seed(BLEND_SHIFT_SEED + 1)).numpy()
        parts, far = sources(net, x), relative_residual(net, x) > threshold
        gated[shift_sd] = (np.where(far[:, None], parts[1].numpy(), stacked(parts, run_coefs)), parts)
    far = relative_residual(net, features) > threshold
    add(f"hpvade, linear-fit prior where residual > {threshold:.3f} ({int(far.sum())} of {len(far)} bulks)",
        np.where(far[:, None], real_parts[1].numpy(), hp_real), types, gated[0.0][0])
    for shift_sd in args.shift_sd:  # on validation mixtures under a simulated shift: gated vs stacking vs prior
        out, parts = gated[shift_sd]
        for label, proportions in [("gated", out), ("stacking", stacked(parts, run_coefs)), ("linear-fit prior", parts[1].numpy())]:
            rows.append({"variant": f"val half under shift sd {shift_sd}: hpvade {label}", **pseudobulk_scores(proportions, score_p)})

    for item in args.checkpoint:
        name, path = item.split("=", 1)
        other = load_model(path)
        other_x, _ = align_bulk(bulk, other, 1000, source=entry["path"])
        add(f"hpvade {name}", other.predict_partial(other_x), other.cell_types, other.predict(score_x))
        add(f"hpvade {name} encoder alone", sources(other.net, other_x)[0].numpy(), other.cell_types,
            sources(other.net, score_x)[0].numpy())

    for spec in filter(None, args.adapt.split(",")):
        steps, learning_rate, anchor = spec.split(":")
        adapted = adapt_encoder(net, features, int(steps), float(learning_rate), float(anchor))
        parts = sources(adapted, features)
        add(f"adapted encoder ({steps} steps, lr {learning_rate}, anchor {anchor})", parts[0].numpy(), types)
        add(f"adapted encoder stacked ({steps} steps, lr {learning_rate}, anchor {anchor})",
            stacked([parts[0]] + real_parts[1:], run_coefs), types)

    for name, proportions, cell_types in [("nnls", nnls_real, nnls.cell_types), ("hpvade", hp_real, types),
                                          ("hpvade encoder", real_parts[0].numpy(), types)]:
        calibrated = loo_scale_calibration(shares(proportions, cell_types), measured)
        rows.append({"variant": f"{name} + per-group scale, leave-one-sample-out (uses truth)",
                     **group_scores(calibrated, measured, groups)})

    print(f"real bulk {args.bulk!r}: {len(measured)} samples, {len(groups)} groups renormalised; "
          f"val_*: second half of the validation mixtures ({len(score_p)})")
    print_table(pd.DataFrame(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
