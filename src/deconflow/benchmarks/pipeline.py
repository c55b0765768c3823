"""Speed benchmark: prints a table of figures (not a test; numbers depend on the machine).

    python -m deconflow.benchmarks.pipeline [--reference resources/pbmc/reference.h5ad] [--workflow-dir .]

    python -m deconflow.benchmarks.pipeline --pipeline   # also time the default pipeline (minutes; `make bench`)

Measures pseudobulk throughput (mixtures/s at 500 cells per mixture) and its ratio to the naive
per-sample loop, NNLS seconds per sample, the `snakemake -n` time of a config with
100 datasets x 3 models, and training seconds per epoch per model (from the training logs of a
finished run under ``results/``). With ``--pipeline`` it runs the default pipeline (the
project's config/config.yaml) from scratch in a temporary copy of the project, with the
already converted ``resources/`` (the wheel downloads are not timed), and reports its wall
time and that run's seconds per epoch. The project copy (``copy_project``, ``project_env``) is
the one the workflow tests run in.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ..io import read_reference
from ..models.nnls import NNLSModel
from ..pseudobulk import MixtureSettings, make_pseudobulk, naive_pseudobulk
from ..signature import cell_type_mean_cpm
from .common import best_time


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


def training_seconds_per_epoch(results: Path) -> list[tuple[str, float, int]]:
    """(dataset/model, mean seconds per epoch, epochs) from every results/*/models/*/training_log.csv."""
    out = []
    for path in sorted(Path(results).glob("*/models/*/training_log.csv")):
        with open(path, newline="") as handle:
            seconds = [float(row["seconds"]) for row in csv.DictReader(handle)]
        if seconds:
            out.append((f"{path.parts[-4]}/{path.parts[-2]}", sum(seconds) / len(seconds), len(seconds)))
    return out


#: what a runnable project copy needs (the workflow tests copy the same items)
PROJECT_ITEMS = ("Snakefile", "workflow", "config", "profiles", "src", "envs", "data")


def copy_project(source: Path, dest: Path, resources: Path | None = None) -> Path:
    """Copy the workflow and library of ``source`` (mtimes kept) into ``dest``, plus ``resources``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_ITEMS:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    if resources is not None:
        shutil.copytree(resources, dest / "resources")
    return dest


def project_env(workdir: Path) -> dict:
    """Environment for snakemake in a project copy: this python first on PATH (jobs find it),
    the copy's library first on PYTHONPATH (jobs import the copied code, not an installed one)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(workdir) / "src"), env.get("PYTHONPATH", "")] if p)
    return env


def pipeline_wall_seconds(workflow_dir: Path, work: Path) -> float:
    """Wall time of `snakemake --profile profiles/local` (default config) in a fresh copy at ``work``."""
    resources = workflow_dir / "resources"
    copy_project(workflow_dir, work, resources if resources.is_dir() else None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/local", "--quiet", "rules"], cwd=work,
                   env=project_env(work), check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default="resources/pbmc/reference.h5ad")
    parser.add_argument("--workflow-dir", default=".", help="folder with the Snakefile")
    parser.add_argument("--n-mixtures", type=int, default=2000)
    parser.add_argument("--pipeline", action="store_true", help="also run and time the default pipeline in a temporary copy")
    args = parser.parse_args(argv)
    workflow_dir = Path(args.workflow_dir).resolve()

    reference = read_reference(args.reference)
    types = reference.cell_types
    rows = []
    settings = MixtureSettings(n_mixtures=args.n_mixtures, cells_per_mixture=500)
    fast = best_time(lambda: make_pseudobulk(reference.counts, reference.labels, types, settings, 0))
    naive_settings = MixtureSettings(n_mixtures=200, cells_per_mixture=500)
    naive = best_time(lambda: naive_pseudobulk(reference.counts, reference.labels, types, naive_settings, 0), repeats=1)
    fast_rate, naive_rate = args.n_mixtures / fast, 200 / naive
    rows.append(("pseudobulk mixtures/s (500 cells/mixture)", f"{fast_rate:,.0f}", ">= 1,000"))
    rows.append(("  ratio to naive per-sample loop", f"{fast_rate / naive_rate:.1f}x", ">= 20x"))

    signature = cell_type_mean_cpm(reference.counts, reference.labels, reference.genes, types)
    mixtures, _ = make_pseudobulk(reference.counts, reference.labels, types, MixtureSettings(n_mixtures=200), 1)
    model = NNLSModel(signature)
    per_sample = best_time(lambda: model.predict(mixtures), repeats=1) / len(mixtures)
    rows.append(("NNLS seconds per sample", f"{per_sample * 1e3:.2f} ms", ""))

    dry = dag_dry_run_seconds(workflow_dir)
    rows.append(("snakemake -n, 100 datasets x 3 models", f"{dry:.1f} s", "<= 10 s"))

    if args.pipeline:
        with tempfile.TemporaryDirectory() as tmp:
            wall = pipeline_wall_seconds(workflow_dir, Path(tmp))
            rows.append(("default pipeline wall time (fresh results/)", f"{wall:.0f} s", "<= 300 s"))
            epochs = training_seconds_per_epoch(Path(tmp) / "results")
            comparisons = {path.parts[-3]: path.read_text() for path in sorted(Path(tmp, "results").glob("*/evaluation/comparison.csv"))}
    else:
        epochs = training_seconds_per_epoch(workflow_dir / "results")
        comparisons = {}
    for name, seconds, n in epochs:
        rows.append((f"training s/epoch {name} ({n} epochs)", f"{seconds:.2f} s", ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  {'measured':>12}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>12}  {target}")
    for dataset, table in comparisons.items():
        print(f"\ncomparison.csv of the timed run, dataset {dataset}:\n{table}", end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
