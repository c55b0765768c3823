"""Methylation benchmark: nnls vs nnls_reads vs sparse (+refit), synthetic and real reads (issues 4, 11, 32).

    python -m deconflow.benchmarks.methylation [--atlas resources/loyfer2023/atlas.tsv] [--scenario sd1.0]
    python -m deconflow.benchmarks.methylation --methsets ../shared/methsets --models results/cfdna/models [--draws 10]

Synthetic (default): for each noise setting (logit-normal sd 0.5 with coverage 1-30x, and sd 1.0
with 1-10x) it simulates train/val/test mixtures (independent seeds; test with 25 % spike-ins at
0.1/0.5/1/5 %) with their read coverage, trains ``sparse`` with its defaults on CPU, and prints
for each model MAE, presence accuracy, spurious rate, spurious mass share, mean predicted/true
ratio, the share of 1 % spikes called present (≥ 1 %) and detected at all (> 0), and the
detection-limit table. Without ``--atlas`` the nanomix wheel is downloaded to a temporary folder
(``pip download``, never installed) and converted.

Real reads (``--methsets``): the fitted checkpoints under ``--models`` on the Roadmap tissues
and mixtures, the celfie sorted blood cells and low-fraction read mixtures drawn from the pure
Roadmap samples (``deconflow.benchmarks.real_methylation``; ``make bench-meth``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation import compute_metrics, detection_limit_table
from ..methylation import NANOMIX_PACKAGE, MethylationSimSettings, convert_nanomix_wheel, read_atlas, simulate_methylation, split_seed, split_simulation_settings
from ..models import nnls, nnls_reads
from ..training import train_learner
from .common import print_table, split_mixtures

SCENARIOS = {"sd0.5": ("sd 0.5, coverage 1-30x", 0.5, (1.0, 30.0)), "sd1.0": ("sd 1.0, coverage 1-10x", 1.0, (1.0, 10.0))}
COLUMNS = ["mae", "presence_accuracy", "spurious_rate", "spurious_mass_share", "mean_pred_true_ratio"]


def default_atlas(workdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.9",
         "--platform", "manylinux_2_31_x86_64", NANOMIX_PACKAGE, "-d", str(workdir), "-q"],
        check=True,
    )
    wheel = next(workdir.glob("nanomix-*.whl"))
    atlas = workdir / "atlas.tsv"
    convert_nanomix_wheel(wheel, atlas)
    return atlas


def run_scenario(atlas: pd.DataFrame, logit_sd: float, depth_range, sizes: dict, seed: int, settings: dict) -> tuple[pd.DataFrame, dict, dict]:
    base = MethylationSimSettings(logit_sd=logit_sd, depth_range=tuple(depth_range))
    sets = {}
    for split in ("train", "val", "test"):
        sim = simulate_methylation(atlas, split_simulation_settings(base, split, sizes), split_seed(seed, split))
        sets[split] = split_mixtures(sim["features"].astype(np.float32), sim["proportions"], atlas.index.to_numpy(),
                                     atlas.columns.to_numpy(), split, "beta")
        sets[split].extra["coverage"] = sim["coverage"]  # reads per region, as written to extra/coverage
    started = time.perf_counter()
    model, _history = train_learner("sparse", sets["train"], sets["val"], atlas, {"num_threads": 2, "tensorboard": False, **settings}, seed)
    train_seconds = time.perf_counter() - started
    test = sets["test"]
    reads_model = nnls_reads.fit(test, None, atlas, {})
    started_reads = time.perf_counter()
    reads_prediction = reads_model.predict_with_coverage(test.features, test.extra["coverage"])
    reads_seconds = time.perf_counter() - started_reads
    predictions = {
        "nnls": nnls.fit(test, None, atlas, {}).predict(test.features),
        "nnls_reads": reads_prediction,
        "sparse": model.predict(test.features, refit=False),
        "sparse+refit": model.predict(test.features, refit=True),
    }
    rows, detection = [], {}
    for name, pred in predictions.items():
        metrics = compute_metrics(test.proportions, pred, atlas.columns)
        detection[name] = detection_limit_table(test.proportions, pred)
        one_percent = detection[name].set_index("spike_level").loc[0.01]
        rows.append({"model": name, **{k: metrics[k] for k in COLUMNS},
                     "spike_1pct_called": one_percent["fraction_above_threshold"], "spike_1pct_detected": one_percent["fraction_detected"],
                     "absent_called_rate": one_percent["absent_called_rate"]})
    return pd.DataFrame(rows), detection, {"train_seconds": train_seconds, "reads_seconds": reads_seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlas", help="atlas TSV (regions x cell types); default: download the nanomix wheel")
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-val", type=int, default=400)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", choices=["all", *SCENARIOS], default="all",
                        help="noise setting(s): sd0.5 (coverage 1-30x), sd1.0 (coverage 1-10x, issue 11's figures) or all")
    parser.add_argument("--quick", action="store_true", help="only the first noise setting (same as --scenario sd0.5)")
    parser.add_argument("--methsets", help="real reads instead: the methsets folder (../shared/methsets; its README)")
    parser.add_argument("--models", default="results/cfdna/models", help="with --methsets: folder of the fitted checkpoints")
    parser.add_argument("--real-models", nargs="+", default=["nnls", "nnls_reads", "sparse"], help="with --methsets: models to run")
    parser.add_argument("--draws", type=int, default=10, help="with --methsets: read mixtures per (pair, fraction)")
    parser.add_argument("--evidence", nargs="+", default=[], metavar="KEY=VALUE",
                        help="with --methsets: methylation_evidence settings, e.g. min_marker_regions=2")
    args = parser.parse_args(argv)
    if args.methsets:
        return real_reads(args)
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        atlas_path = Path(args.atlas) if args.atlas else default_atlas(Path(tmp))
        atlas = read_atlas(atlas_path)
    print(f"atlas: {atlas.shape[0]} regions x {atlas.shape[1]} cell types; train/val/test = {args.n_train}/{args.n_val}/{args.n_test}, seed {args.seed}")
    pd.set_option("display.width", 160)
    sizes = {"train": args.n_train, "val": args.n_val, "test": args.n_test}
    chosen = ["sd0.5"] if args.quick else list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    for key in chosen:
        title, sd, depth = SCENARIOS[key]
        table, detection, info = run_scenario(atlas, sd, depth, sizes, args.seed, {})
        print(f"\n=== {title} (sparse trained in {info['train_seconds']:.0f} s; nnls_reads {info['reads_seconds']:.0f} s "
              f"for {args.n_test} test mixtures) ===")
        print("\ntest mixtures:")
        print_table(table)
        nnls_mae = float(table.set_index("model").loc["nnls", "mae"])
        for name in ("nnls_reads", "sparse", "sparse+refit"):
            print(f"{name}: MAE {float(table.set_index('model').loc[name, 'mae']) / nnls_mae - 1:+.1%} relative to nnls")
        for name, frame in detection.items():
            print(f"\ndetection limit, {name}:")
            print_table(frame)
    return 0


def real_reads(args) -> int:
    from . import real_methylation

    folder = real_methylation.find_methsets(args.methsets)
    if folder is None:
        print(f"no methsets folder at {args.methsets} (needs uxm_roadmap_counts.tsv; ../shared/methsets, never copied into the repository)")
        return 1
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 40)
    started = time.perf_counter()
    import yaml

    settings = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.evidence)}
    out = real_methylation.run(folder, args.models, args.real_models, draws=args.draws, seed=args.seed, settings=settings)
    print(f"real reads from {folder}; models {args.real_models} from {args.models}; methylation_evidence {settings or 'defaults'}")
    print("\n=== uxm_roadmap pure tissues: tissue-group shares (own_largest: the sample's own group is the largest of the four) ===")
    print_table(out["roadmap_pure"])
    print("\n=== uxm_roadmap read mixtures MIX01-12: Pearson r of each tissue group with its truth fraction ===")
    print_table(out["roadmap_r"])
    print(f"seconds per model for the 19 Roadmap samples: {out['roadmap_seconds']}")
    print("\n=== celfie_wgbs sorted cells (Blueprint/ENCODE): the mapped atlas type's share and the largest type ===")
    print_table(out["celfie"])
    print("\n=== celfie_wgbs plasma cfDNA: tissues the read test detects; non-blood tissues each model reports (share > 0) ===")
    print_table(out["plasma"])
    print(f"\n=== low-fraction read mixtures of the pure Roadmap samples ({args.draws} draws per ordered pair and fraction, "
          f"{out['curves_seconds']:.0f} s): detection of the spiked tissue and false calls of absent tissues ===")
    print_table(out["curves"])
    print("\ndetection rate per source sample (the spiked tissue's own cell type is 9-26 % of the lung samples' DNA):")
    print(out["per_source"].round(2).to_string())
    oracle = out["oracle"]
    print("\n=== oracle bound (real_methylation.oracle_power: knows both samples' own profiles, independent binomial calls; "
          "an upper bound, not a target) vs the read test ===")
    test = out["curves"][out["curves"]["method"] == "read test"].set_index("fraction")["detected"]
    by_f = oracle.groupby("fraction")[["power", "power_markers"]].mean()
    by_f.insert(0, "read_test_detected", test.reindex(by_f.index))
    print(by_f.rename(columns={"power": "oracle_all_regions", "power_markers": "oracle_tissue_markers"}).round(3).to_string())
    print("\nper source sample A (own_share: A's own tissue group in the nnls fit of pure A); read test / oracle all regions / "
          "oracle A's tissue markers:")
    per = {"read test": out["per_source"].loc["read test"],
           "oracle": oracle.pivot_table(index="a", columns="fraction", values="power"),
           "oracle markers": oracle.pivot_table(index="a", columns="fraction", values="power_markers")}
    table = pd.concat(per, axis=1).round(2)
    table.insert(0, "own_share", out["own_share"].reindex(table.index).round(2))
    print(table.to_string())
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
