"""How the ``linear_fit`` settings were chosen, and how much the real cohort depends on them.

The linear fit (``nnls``, and HP-VADE's linear-fit prior) has two settings that matter on real
bulk: ``marker_genes_per_type`` and ``weight_offset_cpm``. This prints, for a grid of both, the
fit's figures on a finished run's validation mixtures (never the test mixtures), clean and
under simulated platform shifts (per-gene log-normal factors shared by all mixtures of a draw,
as ``train.hpvade.augment_gene_sd`` simulates them; mean and spread over ``--draws`` draws)
and under the real bulk's own per-gene factors as estimated from its expression alone
(``{bulk}_shift``: median log ratio of bulk to an all-gene fit, genes it lacks left missing),
beside the same fit's figures on a real bulk with measured fractions, scored as the run scores it
(its ``cell_mrna`` table applied).

The real columns are a check, not a criterion. The last lines name the settings that validation
cannot tell apart from the best one (shifted-validation CCC within one draw-to-draw spread of
the best) and the range of real-cohort figures over them: how much a real-bulk figure owes to a
choice that pseudobulk does not constrain.

    python -m deconflow.benchmarks.linear_fit --results results/pbmc --dataset pbmc --bulk daism
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
from .real_bulk import Cohort, group_scores, pseudobulk_scores

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    Cohort.add_arguments(parser)
    parser.add_argument("--markers", default="100,125,150,200,300,400,all",
                        help="marker_genes_per_type values, comma separated ('all': every gene)")
    parser.add_argument("--offsets", default="1,10,100", help="weight_offset_cpm values, comma separated ('none': unweighted)")
    parser.add_argument("--shift-sd", type=float, nargs="*", default=[0.5, 1.0])
    parser.add_argument("--draws", type=int, default=5, help="simulated platforms per shift sd")
    args = parser.parse_args(argv)

    config = yaml.safe_load(open(args.config))
    chosen = {**nnls.LINEAR_FIT_DEFAULTS, **(config.get("linear_fit") or {})}
    signature = read_signature(f"{args.results}/signature/signature.tsv")
    sizes = reference_cell_size(signature)
    cohort = Cohort.load(args.config, args.dataset, args.bulk,
                         None if sizes is None else np.array(list(sizes.values())), list(signature.columns))
    val = read_mixtures(f"{args.results}/pseudobulk/val.h5")
    # every variant reads the signature's genes, so the bulk is aligned once
    real_x, _ = align_bulk(cohort.bulk, nnls.fit(val, None, signature, {"linear_fit": chosen}), 1000, source=cohort.entry["path"])
    conditions = [("val", [val.features])] + [
        (f"sd{sd:g}", [shifted(val.features, sd, d) for d in range(args.draws)]) for sd in args.shift_sd] + [
        (f"{args.bulk}_shift", [with_factors(val.features, bulk_gene_factors(signature, val, real_x))])]

    rows = []
    for markers in [None if m == "all" else int(m) for m in args.markers.split(",")]:
        for offset in [None if o == "none" else float(o) for o in args.offsets.split(",")]:
            setting = {**chosen, "marker_genes_per_type": markers, "weight_offset_cpm": offset}
            model = nnls.fit(val, None, signature, {"linear_fit": setting})
            row = {"markers": "all" if markers is None else markers, "offset": "none" if offset is None else offset,
                   "default": "*" if (markers, offset) == (chosen["marker_genes_per_type"], chosen["weight_offset_cpm"]) else ""}
            for name, features in conditions:
                draws = [pseudobulk_scores(model.predict(x), val.proportions) for x in features]
                for key in ("r", "ccc", "mae"):
                    row[f"{name}_{key}"] = float(np.mean([d[f"val_{key}"] for d in draws]))
                if name.startswith("sd"):
                    row[f"{name}_ccc_spread"] = float(np.std([d["val_ccc"] for d in draws]))
            real = group_scores(cohort.shares(model.predict_partial(real_x), model.cell_types), cohort.measured, cohort.groups)
            row.update({f"real_{k.replace(' ', '_')}": v for k, v in real.items()})
            rows.append(row)
            print(f"markers {row['markers']}, offset {row['offset']}: done", flush=True)

    frame = pd.DataFrame(rows)
    print(f"linear fit on {len(val.proportions)} validation mixtures (clean; shifted: mean of {args.draws} draws, "
          f"ccc_spread = their sd) and real bulk {args.bulk!r} ({len(cohort.measured)} samples, "
          f"{'cell_mrna applied' if cohort.content is not None else 'no cell_mrna'}); * = the config's setting")
    print_table(frame)
    criterion = f"sd{max(args.shift_sd):g}_ccc" if args.shift_sd else "val_ccc"
    spread = f"{criterion}_spread"
    if spread not in frame:  # clean validation only: one evaluation, no spread
        frame[spread] = 0.0
    tied = frame[equivalent_rows(frame, criterion, spread)]
    print(f"\nsettings validation cannot tell apart ({criterion} within one draw spread of the best): "
          + ", ".join(f"{m}/{o}" for m, o in zip(tied["markers"], tied["offset"])))
    print(f"real cohort over them: CCC {tied['real_ccc'].min():.3f}-{tied['real_ccc'].max():.3f}, "
          f"mean group r {tied['real_mean_group_r'].min():.3f}-{tied['real_mean_group_r'].max():.3f}, "
          f"MAE {tied['real_mae'].min():.3f}-{tied['real_mae'].max():.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
