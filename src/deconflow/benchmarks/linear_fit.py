"""How the ``linear_fit`` settings were chosen, and how much the real cohorts depend on them.

The linear fit (``nnls``, and HP-VADE's linear-fit prior) has three settings that matter on
real bulk: ``marker_genes_per_type``, ``min_marker_cpm``, ``weight_offset_cpm`` and
``max_bulk_ratio`` (the cap on bulk genes beyond any mixture). This prints, for a grid of single
settings, the config's own (``*``; now a marker-set ensemble: lists) and the config's marker
setting with other caps (``--max-bulk-ratio``),
the fit's figures on a finished run's validation mixtures (never the test mixtures), clean and
under simulated platform shifts (per-gene log-normal factors shared by all mixtures of a draw,
as ``train.hpvade.augment_gene_sd`` simulates them; mean and spread over ``--draws`` draws)
and under each real bulk's own per-gene factors as estimated from its expression alone
(``{bulk}_shift``: median log ratio of bulk to an all-gene fit, genes it lacks left missing),
beside the same fit's figures on every real bulk with measured fractions (``--bulk``; default:
every bulk of the dataset with ``truth``), scored as the run scores them (a ``cell_mrna``
table applied where the bulk has one): ``real_{cohort}_{ccc,r,mae}`` per cohort and
``real_mean_*`` over the cohorts (each counts once).

The real columns are a check, not a criterion. The last lines name the settings that validation
cannot tell apart from the best one (shifted-validation CCC within one draw-to-draw spread of
the best) and the range of the mean real figures, and of each cohort's, over them: how much a
real-bulk figure owes to a choice that pseudobulk does not constrain.

    python -m deconflow.benchmarks.linear_fit --results results/pbmc --dataset pbmc [--cohorts-dir ../shared/realbulk] [--bulk daism monaco]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
import torch
import yaml

from ..cell_content import reference_cell_size
from ..deconvolve import align_bulk
from ..io import read_mixtures, read_signature
from ..models import nnls
from ..models.hpvade import augment
from .common import print_table
from .real_bulk import Cohort, group_scores, mean_over_cohorts, pseudobulk_scores

#: first seed of the simulated shifts; draw d uses SHIFT_SEED + d (the real_bulk bench uses others)
SHIFT_SEED = 1000


def shifted(features: np.ndarray, gene_sd: float, draw: int) -> np.ndarray:
    """All mixtures under one simulated platform (one factor per gene for the whole set)."""
    generator = torch.Generator().manual_seed(SHIFT_SEED + draw)
    return augment(torch.from_numpy(np.asarray(features, dtype=np.float64)), gene_sd, 0.0, generator).numpy()


def bulk_gene_factors(signature: pd.DataFrame, val, real_x: np.ndarray) -> np.ndarray:
    """The real bulk's own platform effect per gene, estimated without its truth: median over
    samples of log((x + 1) / (S·m + 1)), m the mRNA fractions of an all-gene weighted fit;
    NaN for genes the bulk lacks (they stay missing in the shifted mixtures)."""
    plain = nnls.fit(val, None, signature, {"linear_fit": {"marker_genes_per_type": None, "cell_fractions": False}})
    fitted = plain.predict_partial(real_x) @ signature.to_numpy(dtype=np.float64).T
    with warnings.catch_warnings():  # genes the bulk lacks in every sample: NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(np.log((real_x + 1.0) / (fitted + 1.0)), axis=0)


def with_factors(features: np.ndarray, log_factors: np.ndarray) -> np.ndarray:
    """Mixtures × exp(log factor) per gene, renormalised to CPM over the genes that have one."""
    out = np.asarray(features, dtype=np.float64) * np.exp(log_factors)[None, :]
    return out / np.nansum(out, axis=1, keepdims=True) * 1e6


def equivalent_rows(frame: pd.DataFrame, score: str, spread: str) -> pd.Series:
    """Rows whose ``score`` is within one ``spread`` (of the best row) of the best ``score``."""
    best = frame[score].idxmax()
    return frame[score] >= frame.at[best, score] - frame.at[best, spread]


def _label(value, none: str) -> str:
    """A setting's value as shown: lists comma separated, None as ``none``, 10.0 as 10."""
    if value is None:
        return none
    if isinstance(value, (list, tuple)):
        return ",".join(_label(v, none) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _as_list(value) -> list:
    return [float(v) if isinstance(v, (int, float)) else v for v in (value if isinstance(value, (list, tuple)) else [value])]


def _values(text: str, parse) -> list:
    return [parse(v) for v in text.split(",")]


def settings_rows(chosen: dict, markers, min_cpms, offsets) -> list[dict]:
    """The grid of single settings (every ``markers`` x ``min_cpms`` x ``offsets``), plus the
    config's own setting ``chosen`` as a row of its own unless it is one of them (it may be a
    marker-set ensemble: lists). Each: ``{"setting": linear_fit settings, "default": "*" or ""}``."""

    def same(setting):
        return all(_as_list(setting[key]) == _as_list(chosen.get(key)) for key in ("marker_genes_per_type", "min_marker_cpm")) \
            and setting["weight_offset_cpm"] == chosen["weight_offset_cpm"]

    rows = []
    for n_markers in markers:
        for min_cpm in min_cpms if n_markers is not None else min_cpms[:1]:  # every gene: no threshold
            for offset in offsets:
                setting = {**chosen, "marker_genes_per_type": n_markers, "min_marker_cpm": min_cpm, "weight_offset_cpm": offset}
                rows.append({"setting": setting, "default": "*" if same(setting) else ""})
    if not any(row["default"] for row in rows):
        rows.append({"setting": dict(chosen), "default": "*"})
    return rows


def cap_rows(chosen: dict, caps) -> list[dict]:
    """The config's marker setting with each other ``max_bulk_ratio`` in ``caps`` (the config's
    own value is the ``*`` row already)."""
    return [{"setting": {**chosen, "max_bulk_ratio": cap}, "default": ""} for cap in caps if cap != chosen.get("max_bulk_ratio")]


def validation_conditions(val, signature: pd.DataFrame, cohorts, real_xs, shift_sds, draws: int) -> list[tuple[str, list]]:
    """``(name, [mixture features, ...])``: the clean validation mixtures (``val``), ``draws``
    simulated platforms per shift sd (``sd{sd}``) and each cohort's own per-gene factors
    (``{cohort}_shift``; ``real_xs``: each cohort's bulk aligned to the signature)."""
    return [("val", [val.features])] + [
        (f"sd{sd:g}", [shifted(val.features, sd, d) for d in range(draws)]) for sd in shift_sds] + [
        (f"{c.name}_shift", [with_factors(val.features, bulk_gene_factors(signature, val, x))]) for c, x in zip(cohorts, real_xs)]


def validation_scores(model, conditions, proportions: np.ndarray) -> dict:
    """``{condition}_{r,ccc,mae}`` of ``model`` (mean over a condition's draws) and, for
    simulated shifts, ``{condition}_ccc_spread`` (their sd)."""
    row = {}
    for name, features in conditions:
        draws = [pseudobulk_scores(model.predict(x), proportions) for x in features]
        for key in ("r", "ccc", "mae"):
            row[f"{name}_{key}"] = float(np.mean([d[f"val_{key}"] for d in draws]))
        if name.startswith("sd"):
            row[f"{name}_ccc_spread"] = float(np.std([d["val_ccc"] for d in draws]))
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    Cohort.add_arguments(parser)
    parser.add_argument("--markers", default="100,125,150,200,300,400,all",
                        help="marker_genes_per_type values, comma separated ('all': every gene)")
    parser.add_argument("--min-cpm", default="1", help="min_marker_cpm values, comma separated")
    parser.add_argument("--offsets", default="1,10,100", help="weight_offset_cpm values, comma separated ('none': unweighted)")
    parser.add_argument("--max-bulk-ratio", default="none,5,10,20,30,50,100",
                        help="max_bulk_ratio values tried with the config's marker setting, comma separated ('none': no cap)")
    parser.add_argument("--shift-sd", type=float, nargs="*", default=[0.5, 1.0])
    parser.add_argument("--draws", type=int, default=5, help="simulated platforms per shift sd")
    parser.add_argument("--per-group", action="store_true", help="also print each cohort's r per group")
    args = parser.parse_args(argv)

    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    # every row with the dataset's sibling split, as the run fits it
    siblings = [list(pair) for pair in (config.get("datasets") or {}).get(args.dataset, {}).get("sibling_types", [])]
    chosen = {**nnls.LINEAR_FIT_DEFAULTS, **(config.get("linear_fit") or {}), "siblings": siblings}
    signature = read_signature(f"{args.results}/signature/signature.tsv")
    sizes = reference_cell_size(signature)
    cohorts = Cohort.load_all(args, None if sizes is None else np.array(list(sizes.values())), list(signature.columns))
    val = read_mixtures(f"{args.results}/pseudobulk/val.h5")
    # every variant reads the signature's genes, so each bulk is aligned once
    aligner = nnls.fit(val, None, signature, {"linear_fit": chosen})
    real_xs = [align_bulk(c.bulk, aligner, 1000, source=c.entry["path"])[0] for c in cohorts]
    conditions = validation_conditions(val, signature, cohorts, real_xs, args.shift_sd, args.draws)

    rows, real = [], {c.name: [] for c in cohorts}
    grid = settings_rows(chosen, _values(args.markers, lambda m: None if m == "all" else int(m)),
                         _values(args.min_cpm, float), _values(args.offsets, lambda o: None if o == "none" else float(o)))
    grid += cap_rows(chosen, _values(args.max_bulk_ratio, lambda c: None if c == "none" else float(c)))
    for index, item in enumerate(grid):
        setting = item["setting"]
        model = nnls.fit(val, None, signature, {"linear_fit": setting})
        row = {"markers": _label(setting["marker_genes_per_type"], "all"), "min_cpm": _label(setting["min_marker_cpm"], "none"),
               "offset": _label(setting["weight_offset_cpm"], "none"), "cap": _label(setting.get("max_bulk_ratio"), "none"),
               "default": item["default"],
               **validation_scores(model, conditions, val.proportions)}
        for cohort, x in zip(cohorts, real_xs):
            scores = group_scores(cohort.shares(model.predict_partial(x), model.cell_types), cohort.measured, cohort.groups)
            real[cohort.name].append({"variant": index, **scores})
        rows.append(row)
        print(f"markers {row['markers']}, min cpm {row['min_cpm']}, offset {row['offset']}: done", flush=True)

    frame = pd.concat([pd.DataFrame(rows), real_columns(real, args.per_group)], axis=1)
    print(f"linear fit on {len(val.proportions)} validation mixtures (clean; shifted: mean of {args.draws} draws, "
          f"ccc_spread = their sd) and real bulks {', '.join(c.describe() for c in cohorts)}; "
          f"real_mean_*: mean over the cohorts; * = the config's setting")
    print_table(frame)
    print_ties(frame, args.shift_sd, [c.name for c in cohorts])
    return 0


def real_columns(real: dict[str, list[dict]], per_group: bool = False) -> pd.DataFrame:
    """Per cohort ``real_{cohort}_{ccc,r,mae}`` (and ``_r_{group}`` with ``per_group``), then
    ``real_mean_{ccc,r,mae}`` over the cohorts (``mean_over_cohorts``); one row per setting,
    in order. ``real``: cohort -> one ``{"variant": i, **group_scores}`` per setting."""
    frames = {name: pd.DataFrame(scores) for name, scores in real.items()}
    short = {"ccc": "ccc", "mean_group_r": "r", "mae": "mae"}
    columns = {}
    for name, table in frames.items():
        for key, label in short.items():
            columns[f"real_{name}_{label}"] = table[key].to_numpy()
        if per_group:
            for key in [k for k in table if k.startswith("r ")]:
                columns[f"real_{name}_r_{key[2:]}"] = table[key].to_numpy()
    means = mean_over_cohorts(frames)
    for key, label in short.items():
        columns[f"real_mean_{label}"] = means[key].to_numpy()
    return pd.DataFrame(columns)


def print_ties(frame: pd.DataFrame, shift_sds, cohorts: list[str]) -> None:
    """The settings validation cannot tell apart from the best, and the range of the mean real
    figures and of each cohort's over them."""
    criterion = f"sd{max(shift_sds):g}_ccc" if shift_sds else "val_ccc"
    spread = f"{criterion}_spread"
    if spread not in frame:  # clean validation only: one evaluation, no spread
        frame = frame.assign(**{spread: 0.0})
    tied = frame[equivalent_rows(frame, criterion, spread)]
    print(f"\nsettings validation cannot tell apart ({criterion} within one draw spread of the best; markers/min_cpm/offset/cap): "
          + ", ".join(f"{m}/{c}/{o}/{cap}{d}" for m, c, o, cap, d in zip(tied["markers"], tied["min_cpm"], tied["offset"], tied["cap"],
                                                                          tied["default"])))
    for prefix, what in [("real_mean", f"mean over {len(cohorts)} cohorts")] + [(f"real_{c}", repr(c)) for c in cohorts]:
        print(f"real {what} over them: " + ", ".join(
            f"{label} {tied[f'{prefix}_{key}'].min():.3f}-{tied[f'{prefix}_{key}'].max():.3f}"
            for key, label in [("ccc", "CCC"), ("r", "mean group r"), ("mae", "MAE")]))


if __name__ == "__main__":
    raise SystemExit(main())
