"""How long calibrated intervals and qc rows take for many bulk samples (``deconflow.trust``).

After ``make run``:

    python -m deconflow.benchmarks.intervals --results results/pbmc --models nnls hpvade --n-samples 2000

Bulk-like samples: held-out test mixtures drawn with replacement, each gene's CPM multiplied by
a per-sample log-normal factor (sd 0.3, seeded) and renormalised, with 10 % of the genes missing
(as a real bulk lacks some of the reference's genes). Prints, per model, the wall time of the
intervals (the model's prediction plus its gene-masked replicates, with the model's
``calibration.json``) and of the qc rows, on ``--threads`` BLAS / torch threads (default 1, as the
pipeline's rules and the CLI run, ``deconflow.threads``; on a 2-core machine busy with other work,
2 threads made hpvade's intervals 6x slower, 380 s vs 61 s: HP-VADE's batched NNLS priors are
many small torch operations, and each parallel region waits for a descheduled thread), and the
coverage of the nominal intervals on these perturbed mixtures (perturbed, so not exchangeable
with the validation mixtures: a figure, not a check). CPU seconds are printed beside the wall
time: on a shared machine the wall time measures the neighbours too.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluation import features_for_model
from ..io import read_mixtures
from ..models import load_model
from ..trust import intervals, interval_coverage, qc_table, read_calibration
from .common import print_table


def bulk_like(test, n_samples: int, seed: int, noise_sd: float = 0.3, missing_fraction: float = 0.1):
    """(features with NaN for missing genes, truth) of ``n_samples`` perturbed test mixtures."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(test.proportions), size=n_samples)
    features = np.asarray(test.features, dtype=np.float64)[rows] * np.exp(noise_sd * rng.standard_normal((n_samples, test.features.shape[1])))
    features = features / features.sum(axis=1, keepdims=True) * 1e6
    features[:, rng.random(test.features.shape[1]) < missing_fraction] = np.nan
    return features, test.proportions[rows]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/pbmc", help="results/{dataset} of a finished run")
    parser.add_argument("--models", nargs="+", default=["nnls", "hpvade"])
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from ..threads import fixed_threads

    results = Path(args.results)
    test = read_mixtures(results / "pseudobulk" / "test.h5")
    rows = []
    for name in args.models:
        model = load_model(results / "models" / name / "checkpoint_best.pt")
        calibration = read_calibration(results / "models" / name / "calibration.json", model)
        test_model = type(test)(features_for_model(test, model), test.proportions, model.feature_names, test.cell_types,
                                test.sample_ids, test.attrs)
        features, truth = bulk_like(test_model, args.n_samples, args.seed)
        with fixed_threads(args.threads, torch_threads=args.threads):
            start, cpu_start = time.perf_counter(), time.process_time()
            estimate, lower, upper = intervals(model, features, calibration, args.level)
            interval_seconds, interval_cpu = time.perf_counter() - start, time.process_time() - cpu_start
            start = time.perf_counter()
            qc_table(model, features, np.arange(len(features)), estimate, calibration, False)
            qc_seconds = time.perf_counter() - start
        coverage, width = interval_coverage(truth, lower, upper)
        rows.append({"model": name, "n_samples": args.n_samples, "replicates": calibration["replicates"],
                     "intervals_seconds": interval_seconds, "intervals_cpu_seconds": interval_cpu, "qc_seconds": qc_seconds,
                     "coverage_perturbed": coverage, "mean_width": width})
        print(f"{name}: intervals for {args.n_samples} samples in {interval_seconds:.1f} s wall ({interval_cpu:.1f} s CPU), "
              f"qc rows in {qc_seconds:.1f} s ({args.threads} threads)", flush=True)
    print_table(pd.DataFrame(rows))


if __name__ == "__main__":
    main()
