"""Per-rule times of finished runs, from the rules' ``benchmark:`` files (not a test).

    python -m deconflow.benchmarks.rule_times BENCHMARKS_DIR [BENCHMARKS_DIR ...] [--jobs]

Each argument is a run's ``benchmarks/`` folder (``benchmarks/{dataset}/{rule}[/{wildcards}].tsv``,
snakemake's columns: ``s`` wall seconds, ``cpu_time`` CPU seconds of the job's processes). Prints
one row per rule (summed over its jobs; ``--jobs``: one row per job) with, for every run, the
jobs, wall seconds and CPU seconds, then the totals. On a machine shared with other work the
wall seconds grow with the load; the CPU seconds much less (they still include threads spinning
while they wait for a descheduled one), so compare those first.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def read_benchmarks(folder) -> dict[str, tuple[float, float]]:
    """{job: (wall s, CPU s)} of one run; job = the benchmark file's path under ``folder``
    without ``.tsv`` (``pbmc/train_model/hpvade``). The last row of a file counts (a rerun
    appends nothing: snakemake rewrites it)."""
    jobs = {}
    for path in sorted(Path(folder).rglob("*.tsv")):
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows:
            continue
        row = rows[-1]
        cpu = row.get("cpu_time", "")
        jobs[str(path.relative_to(folder).with_suffix(""))] = (float(row["s"]), float(cpu) if cpu not in ("", "NA") else float("nan"))
    return jobs


def rule_of(job: str) -> str:
    """``pbmc/train_model/hpvade`` -> ``train_model``; ``pbmc/build_signature`` -> ``build_signature``."""
    parts = job.split("/")
    return parts[1] if len(parts) > 1 else parts[0]


def by_rule(jobs: dict[str, tuple[float, float]]) -> dict[str, tuple[int, float, float]]:
    """{rule: (jobs, wall s, CPU s)} summed over the rule's jobs."""
    out: dict[str, list] = defaultdict(lambda: [0, 0.0, 0.0])
    for job, (wall, cpu) in jobs.items():
        entry = out[rule_of(job)]
        entry[0] += 1
        entry[1] += wall
        entry[2] += cpu
    return {rule: tuple(v) for rule, v in out.items()}


def table(runs: list[dict], keys: list[str], per_job: bool) -> list[str]:
    """Markdown rows: key, then per run `jobs | wall s | CPU s` (per_job: `wall s | CPU s`)."""
    lines = []
    for key in keys:
        cells = [key]
        for run in runs:
            if key not in run:
                cells += ["-"] * (2 if per_job else 3)
                continue
            value = run[key]
            cells += ([f"{value[0]:.1f}", f"{value[1]:.1f}"] if per_job else [str(value[0]), f"{value[1]:.1f}", f"{value[2]:.1f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="benchmarks/ folders of finished runs")
    parser.add_argument("--jobs", action="store_true", help="one row per job instead of per rule")
    args = parser.parse_args(argv)
    raw = [read_benchmarks(folder) for folder in args.folders]
    runs = raw if args.jobs else [by_rule(jobs) for jobs in raw]
    keys = sorted({k for run in runs for k in run}, key=lambda k: -max(run.get(k, (0, 0, 0))[-1 if not args.jobs else 1] for run in runs))
    per_run = "wall s | CPU s" if args.jobs else "jobs | wall s | CPU s"
    header = "| " + ("job" if args.jobs else "rule") + "".join(f" | {per_run}" for _ in runs) + " |"
    print(header)
    print("|" + " --- |" * (1 + len(runs) * (2 if args.jobs else 3)))
    print("\n".join(table(runs, keys, args.jobs)))
    totals = []
    for jobs in raw:
        totals.append(f"{len(jobs)} jobs, wall {sum(w for w, _ in jobs.values()):.0f} s, CPU {sum(c for _, c in jobs.values()):.0f} s")
    for folder, total in zip(args.folders, totals):
        print(f"total {folder}: {total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
