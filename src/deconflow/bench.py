"""Speed benchmark: prints a table of figures (not a test; numbers depend on the machine).

    python -m deconflow.bench [--reference resources/pbmc/reference.h5ad] [--workflow-dir .]

Measures pseudobulk throughput (mixtures/s at 500 cells per mixture) and its ratio to the naive
per-sample loop, NNLS seconds per sample, and the `snakemake -n` time of a config with
100 datasets x 3 models. Training seconds per epoch are in `python -m deconflow.bench_models`;
the default pipeline's wall time is `time make run`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from .io import read_reference
from .models.nnls import NNLSModel
from .pseudobulk import MixtureSettings, make_pseudobulk, naive_pseudobulk
from .signature import cell_type_mean_cpm


def _timed(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def dag_dry_run_seconds(workflow_dir: Path, n_datasets: int = 100, models=("nnls", "hpvade", "scaden")) -> float:
    """Wall time of `snakemake -n` for n_datasets RNA datasets x models (nothing exists yet)."""
    config = {
        "models": list(models),
        "datasets": {f"ds{i:03d}": {"reference": f"data/ds{i:03d}.h5ad", "bulk": f"data/ds{i:03d}_bulk.tsv"} for i in range(n_datasets)},
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        for name, ds in config["datasets"].items():  # inputs exist so the DAG is the real one
            Path(tmp, ds["reference"]).touch()
            Path(tmp, ds["bulk"]).touch()
        cfg = Path(tmp) / "bench.yaml"
        cfg.write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--cores", "1", "--snakefile", str(workflow_dir / "Snakefile"),
               "--directory", tmp, "--configfile", str(cfg)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=workflow_dir)
        return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default="resources/pbmc/reference.h5ad")
    parser.add_argument("--workflow-dir", default=".", help="folder with the Snakefile")
    parser.add_argument("--n-mixtures", type=int, default=2000)
    args = parser.parse_args(argv)

    reference = read_reference(args.reference)
    types = reference.cell_types
    rows = []
    settings = MixtureSettings(n_mixtures=args.n_mixtures, cells_per_mixture=500)
    fast = _timed(lambda: make_pseudobulk(reference.counts, reference.labels, types, settings, 0))
    naive_settings = MixtureSettings(n_mixtures=200, cells_per_mixture=500)
    naive = _timed(lambda: naive_pseudobulk(reference.counts, reference.labels, types, naive_settings, 0), repeats=1)
    fast_rate, naive_rate = args.n_mixtures / fast, 200 / naive
    rows.append(("pseudobulk mixtures/s (500 cells/mixture)", f"{fast_rate:,.0f}", ">= 1,000"))
    rows.append(("  ratio to naive per-sample loop", f"{fast_rate / naive_rate:.1f}x", ">= 20x"))

    signature = cell_type_mean_cpm(reference.counts, reference.labels, reference.genes, types)
    mixtures, _ = make_pseudobulk(reference.counts, reference.labels, types, MixtureSettings(n_mixtures=200), 1)
    model = NNLSModel(signature)
    per_sample = _timed(lambda: model.predict(mixtures), repeats=1) / len(mixtures)
    rows.append(("NNLS seconds per sample", f"{per_sample * 1e3:.2f} ms", ""))

    dry = dag_dry_run_seconds(Path(args.workflow_dir).resolve())
    rows.append(("snakemake -n, 100 datasets x 3 models", f"{dry:.1f} s", "<= 10 s"))

    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'measured':>12}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>12}  {target}")
    print(f"(machine: {np.__name__} {np.__version__}; training s/epoch: python -m deconflow.bench_models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
