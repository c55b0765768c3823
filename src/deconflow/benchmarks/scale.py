"""Memory and time of the default pipeline against the reference's size (a benchmark: it prints
figures, it is not a test; `make bench-scale`).

    python -m deconflow.benchmarks.scale [--sizes 20000 100000 300000] [--epochs 3] [--max-gb 10]
                                         [--until RULE ...] [--workdir DIR] [--keep] [--reference-dir DIR]

For every size N it builds a synthetic reference from the embedded one (``resources/pbmc``):
N cells drawn per cell type in the embedded proportions (stratified), each a binomial-thinned
copy of a random cell of its type (every count c becomes Binomial(c, ``--thin``); 0.9 keeps
~690 non-zeros per cell of the embedded ~740), int32 CSR h5ad, written a chunk of cells at a
time (anndata ``write_elem`` + ``sparse_dataset.append``), genes as the embedded reference's.
It then runs the default configuration as a user has it on it, in a temporary project copy:
config/config.yaml's pbmc dataset with this reference, its models and its peers (Rectangle,
dtangle; their venvs from the checkout's ``peer_env_dir``, built there first if missing), every
learned model cut to ``--epochs`` epochs, the local profile, the cores of this machine. It prints
per job: wall seconds and ``max_rss`` from the rule's ``benchmark:`` file, and a sampled peak:
the kernel's high-water mark of the job's resident memory (``VmHWM`` of /proc/PID/status, read
every 0.2 s while the job runs), which does not miss the short peaks that Snakemake's own
sampling can; the peers' jobs (their own interpreters, run by shell rules) are sampled too. Then
the growth of every rule between sizes (MB per 100k cells) and the largest sum of resident memory
of concurrent jobs.

``--until RULE ...`` runs only the jobs those rules' outputs need, asked for as target files
(e.g. ``--until train_model fit_baseline make_pseudobulk peer_signature``: every job that reads
the reference). Snakemake's own ``--until`` is not used: at 300k cells it stopped after 5 of 66
jobs with "Out of jobs ready to be started" (its issue 823; as reported in deconflow issue 35).

Safety: ``--max-gb`` is a watchdog: when the jobs' resident memory together exceeds it the run
is killed and the size reported as stopped (default 10 GB). The temporary folder (references
of 1.7 GB at 300k, ~5.6 GB at 1M cells) is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

from .pipeline import copy_project, project_env

#: cells generated and written per step when building a synthetic reference
WRITE_CHUNK_CELLS = 50_000
#: seconds between two samples of the jobs' memory
POLL_SECONDS = 0.2
#: the rules ``--until`` accepts and the files (per dataset) their jobs write: asked for as targets
UNTIL_RULES = ("split_reference", "build_signature", "make_pseudobulk", "fit_baseline", "train_model", "peer_reference",
               "peer_signature")


# --------------------------------------------------------------------------- synthetic references
def synthetic_reference(source: Path, out: Path, n_cells: int, thin: float = 0.9, seed: int = 0,
                        label_key: str = "cell_type") -> dict:
    """Write an ``n_cells`` h5ad of binomial-thinned copies of ``source``'s cells, stratified by
    type (see the module docstring); returns its size figures."""
    import anndata as ad
    import h5py
    from anndata.io import sparse_dataset, write_elem

    ref = ad.read_h5ad(source)
    counts = sp.csr_matrix(ref.X, dtype=np.int32)
    labels = ref.obs[label_key].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    types, n_of_type = np.unique(labels, return_counts=True)
    wanted = np.floor(n_of_type / n_of_type.sum() * n_cells).astype(int)
    wanted[np.argsort(-(n_of_type / n_of_type.sum() * n_cells - wanted))[: n_cells - wanted.sum()]] += 1
    parents = np.concatenate([rng.choice(np.flatnonzero(labels == t), size=k) for t, k in zip(types, wanted)])
    parents = parents[rng.permutation(len(parents))]
    obs = pd.DataFrame({label_key: pd.Categorical(labels[parents], categories=types)},
                       index=pd.Index([f"cell{i:07d}" for i in range(n_cells)]))
    var = pd.DataFrame(index=ref.var_names.copy())
    nnz = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(out, "w") as h5:
        h5.attrs["encoding-type"] = "anndata"
        h5.attrs["encoding-version"] = "0.1.0"
        write_elem(h5, "obs", obs)
        write_elem(h5, "var", var)
        for name in ("uns", "obsm", "varm", "obsp", "varp", "layers"):
            write_elem(h5, name, {})
        for start in range(0, n_cells, WRITE_CHUNK_CELLS):
            block = counts[parents[start : start + WRITE_CHUNK_CELLS]]
            block.data = rng.binomial(block.data, thin).astype(np.int32)
            block.eliminate_zeros()
            nnz += block.nnz
            if start == 0:
                write_elem(h5, "X", block)  # appendable: anndata writes sparse data with maxshape (None,)
            else:
                sparse_dataset(h5["X"]).append(block)
    return {"cells": n_cells, "nnz_per_cell": nnz / n_cells, "file_gb": out.stat().st_size / 1e9}


def _nnz(path: Path) -> int:
    import h5py

    with h5py.File(path, "r") as h5:
        return int(h5["X/data"].shape[0])


# --------------------------------------------------------------------------- memory sampling
def _hwm_bytes(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _rss(proc) -> int:
    try:
        return proc.memory_info().rss
    except Exception:  # gone or not ours: psutil.NoSuchProcess / AccessDenied
        return 0


class JobSampler(threading.Thread):
    """Polls the processes under ``root_pid``: every job's peak memory (its process's VmHWM, or
    the resident memory of it and its own children together when larger), named by its log file
    (logs/<dataset>/<rule>/<wildcards>.log), the largest sum of resident memory of all processes
    at once, and a watchdog over that sum."""

    def __init__(self, root_pid: int, max_bytes: float):
        super().__init__(daemon=True)
        self.root_pid, self.max_bytes = root_pid, max_bytes
        self.jobs: dict[int, dict] = {}
        self.peak_total = 0
        self.killed = False
        self.stop = threading.Event()

    def run(self):
        import psutil

        while not self.stop.is_set():
            try:
                procs = psutil.Process(self.root_pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            total = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                    total += rss
                    job = self.jobs.get(proc.pid)
                    if job is None:
                        job = new_job(proc.cmdline())
                        if job is None:
                            continue
                        self.jobs[proc.pid] = job
                    if job["log"] is None:
                        logs = [f.path for f in proc.open_files() if "/logs/" in f.path and f.path.endswith(".log")]
                        job["log"] = logs[0].split("/logs/", 1)[1] if logs else None
                    # a job's own worker processes (Rectangle's joblib workers) count as the job's memory
                    tree = rss + sum(_rss(child) for child in proc.children(recursive=True))
                    job["hwm"] = max(job["hwm"], _hwm_bytes(proc.pid), tree)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak_total = max(self.peak_total, total)
            if total > self.max_bytes and not self.killed:
                self.killed = True
                os.killpg(os.getpgid(self.root_pid), signal.SIGKILL)
                return
            time.sleep(POLL_SECONDS)


def new_job(cmdline: list[str]) -> dict | None:
    """A job to follow from its process's command line, or None: a rule's ``script:`` (Snakemake
    runs ``.snakemake/scripts/tmp*.<name>.py``; its log is found among its open files) or a peer's
    script (``<venv>/bin/python workflow/scripts/peer_<peer>.py STEP ... --log LOG``; not the
    shell that starts it)."""
    joined = " ".join(cmdline)
    if ".snakemake/scripts/" in joined:
        return {"script": joined.rsplit(".", 2)[-2], "log": None, "hwm": 0}
    peer_script = [part for part in cmdline if "workflow/scripts/peer_" in part and part.endswith(".py")]
    if peer_script and cmdline and "python" in Path(cmdline[0]).name and "--log" in cmdline[:-1]:
        log_path = cmdline[cmdline.index("--log") + 1]
        return {"script": Path(peer_script[0]).stem, "hwm": 0,
                "log": log_path.split("/logs/", 1)[1] if "/logs/" in log_path else log_path.removeprefix("logs/")}
    return None


def job_name(log_path: str | None, dataset: str) -> str | None:
    """``make_pseudobulk/train`` from ``<dataset>/make_pseudobulk/train.log``."""
    if not log_path or not log_path.startswith(dataset + "/"):
        return None
    return log_path[len(dataset) + 1 : -len(".log")]


def failed_jobs(output: str, dataset: str) -> list[str]:
    """Jobs that failed, from Snakemake's output (``--quiet rules`` prints a ``RuleException``
    and the failed command, which names the job's log): names as in the table."""
    names = []
    for block in output.split("RuleException:")[1:]:
        found = re.search(rf"logs/{re.escape(dataset)}/(\S+?)\.log", block[:4000])
        names.append(found.group(1) if found else "?")
    return sorted(set(names))


def read_benchmarks(work: Path, dataset: str) -> pd.DataFrame:
    """Snakemake's benchmark files of the dataset: job, wall seconds, max_rss (MB)."""
    rows = []
    root = work / "benchmarks" / dataset
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rows.append({"job": str(path.relative_to(root))[: -len(".tsv")], "seconds": float(table["s"].iloc[-1]),
                     "max_rss_mb": float(pd.to_numeric(table["max_rss"], errors="coerce").iloc[-1])})
    return pd.DataFrame(rows, columns=["job", "seconds", "max_rss_mb"])


# --------------------------------------------------------------------------- one size
def bench_config(project: Path, dataset: str, reference: Path, epochs: int, peer_env_dir: Path | None = None) -> dict:
    """The default config (config/config.yaml: its models, its peers, ``peer_max_cells_per_type``)
    with its pbmc dataset on ``reference``, every learned model cut to ``epochs`` epochs, the peers'
    venvs in ``peer_env_dir`` (absolute; default: the config's, inside the project copy)."""
    from ..registry import MODULES

    config = yaml.safe_load((project / "config" / "config.yaml").read_text())
    pbmc = copy.deepcopy(config["datasets"]["pbmc"])
    pbmc["reference"] = str(reference)
    config["datasets"] = {dataset: pbmc}
    for model in config["models"]:
        if MODULES[model][1] and model in config.get("train", {}):  # learned models only
            config["train"][model].update({"epochs": int(epochs), "patience": int(epochs)})
    if peer_env_dir is not None:
        config["peer_env_dir"] = str(peer_env_dir)
    return config


def until_targets(config: dict, dataset: str, rules: list[str]) -> list[str]:
    """The files the jobs of ``rules`` write for ``dataset`` under ``config`` (snakemake targets:
    the run then makes only those and what they need)."""
    from ..peers import PEERS
    from ..registry import MODULES

    unknown = sorted(set(rules) - set(UNTIL_RULES))
    if unknown:
        raise SystemExit(f"--until: unknown rule(s) {unknown}; use any of {list(UNTIL_RULES)}")
    models = config["datasets"][dataset].get("models", config["models"])
    peers = config["datasets"][dataset].get("peers", config.get("peers", []))
    cell_peers = [p for p in peers if PEERS[p].reference == "cells"]
    root = f"results/{dataset}"
    files = {
        "split_reference": [f"{root}/split/cells.tsv"],
        "build_signature": [f"{root}/signature/signature.tsv"],
        "make_pseudobulk": [f"{root}/pseudobulk/{split}.h5" for split in ("train", "val", "test")],
        "fit_baseline": [f"{root}/models/{m}/checkpoint_best.pt" for m in models if not MODULES[m][1]],
        "train_model": [f"{root}/models/{m}/checkpoint_best.pt" for m in models if MODULES[m][1]],
        "peer_reference": [f"{root}/peers/inputs/reference.h5ad"] if cell_peers else [],
        "peer_signature": [f"{root}/peers/{p}/signature.pkl" for p in cell_peers],
    }
    return list(dict.fromkeys(f for rule in rules for f in files[rule]))


def run_size(project: Path, reference: Path, n_cells: int, epochs: int, max_bytes: float,
             until: list[str] | None = None, peer_env_dir: Path | None = None) -> tuple[pd.DataFrame, dict]:
    dataset = f"scale{n_cells}"
    config_path = project / f"config_{dataset}.yaml"
    config = bench_config(project, dataset, reference, epochs, peer_env_dir)
    config_path.write_text(yaml.safe_dump(config))
    targets = until_targets(config, dataset, until) if until else []
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/local", "--configfile", str(config_path),
           "--quiet", "rules", "--keep-going", *targets]  # a failing job is reported, the others still measured
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=project, env=project_env(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    sampler = JobSampler(proc.pid, max_bytes)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    status = "ok" if proc.returncode == 0 else ("stopped by the watchdog" if sampler.killed else f"failed (exit {proc.returncode})")
    if proc.returncode != 0 and not sampler.killed:
        text = output.decode(errors="replace")
        failed = failed_jobs(text, dataset)
        status += f"; failed jobs of {', '.join(failed)}" if failed else ""
        print(text[-3000:], file=sys.stderr)
    table = read_benchmarks(project, dataset)
    sampled = {}
    for job in sampler.jobs.values():
        name = job_name(job["log"], dataset)
        if name:
            sampled[name] = max(sampled.get(name, 0), job["hwm"])
    table["sampled_peak_gb"] = table["job"].map(lambda j: sampled.get(j, np.nan) / 1e9)
    missing = sorted(set(sampled) - set(table["job"]))
    if missing:
        table = pd.concat([table, pd.DataFrame({"job": missing, "sampled_peak_gb": [sampled[j] / 1e9 for j in missing]})])
    return table, {"wall_s": wall, "status": status, "peak_concurrent_gb": sampler.peak_total / 1e9}


def growth(tables: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """Per job: sampled peak at each size and MB per 100k more cells between consecutive sizes."""
    sizes = sorted(tables)
    peaks = pd.DataFrame({n: tables[n].set_index("job")["sampled_peak_gb"] for n in sizes})
    out = peaks.rename(columns=lambda n: f"{n:,} GB")
    for a, b in zip(sizes, sizes[1:]):
        out[f"MB/100k cells {a // 1000}k→{b // 1000}k"] = (peaks[b] - peaks[a]) * 1e3 / ((b - a) / 1e5)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 300_000])
    parser.add_argument("--epochs", type=int, default=3, help="epochs (and patience) of every learned model")
    parser.add_argument("--thin", type=float, default=0.9, help="binomial thinning probability of every count")
    parser.add_argument("--max-gb", type=float, default=10.0, help="watchdog: kill a run whose jobs hold more together")
    parser.add_argument("--until", nargs="+", default=None, choices=UNTIL_RULES, metavar="RULE",
                        help=f"run only these rules' jobs and what they need (target files), any of {', '.join(UNTIL_RULES)}")
    parser.add_argument("--peer-env-dir", default=None,
                        help="the peers' venvs (default: the checkout's `peer_env_dir`, .peers; built there if missing)")
    parser.add_argument("--workflow-dir", default=".", help="folder with the Snakefile and resources/")
    parser.add_argument("--workdir", default=None, help="where to build (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--reference-dir", default=None,
                        help="keep the synthetic references here and reuse those already there (reference_<N>.h5ad)")
    parser.add_argument("--build-only", action="store_true", help="only build the references (with --reference-dir)")
    args = parser.parse_args(argv)
    source = Path(args.workflow_dir).resolve()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="deconflow-scale-"))
    project = copy_project(source, work / "project", source / "resources")  # mtimes kept: nothing is re-made
    user_config = yaml.safe_load((source / "config" / "config.yaml").read_text())
    peer_env_dir = (source / (args.peer_env_dir or user_config.get("peer_env_dir", ".peers"))).resolve()
    tables, summaries = {}, []
    try:
        for n_cells in args.sizes:
            folder = Path(args.reference_dir) if args.reference_dir else work / "references"
            reference = folder / f"reference_{n_cells}.h5ad"
            start = time.perf_counter()
            if args.reference_dir and reference.exists():
                figures = {"nnz_per_cell": _nnz(reference) / n_cells, "file_gb": reference.stat().st_size / 1e9}
                built = "reused"
            else:
                figures = synthetic_reference(source / "resources" / "pbmc" / "reference.h5ad", reference, n_cells, args.thin)
                built = f"built in {time.perf_counter() - start:.0f} s"
            print(f"\n== {n_cells:,} cells: {figures['nnz_per_cell']:.0f} non-zeros per cell, h5ad {figures['file_gb']:.2f} GB "
                  f"({built})", flush=True)
            if args.build_only:
                continue
            table, summary = run_size(project, reference, n_cells, args.epochs, args.max_gb * 1e9, args.until, peer_env_dir)
            tables[n_cells] = table
            summaries.append({"cells": n_cells, "file_gb": figures["file_gb"], **summary,
                              "largest_job_gb": table["sampled_peak_gb"].max(),
                              "largest_job_per_file": table["sampled_peak_gb"].max() / figures["file_gb"]})
            with pd.option_context("display.width", 200):
                print(table.sort_values("job").to_string(index=False, float_format=lambda v: f"{v:.2f}"))
            print(f"whole run {summary['wall_s']:.0f} s, {summary['status']}; largest sum of concurrent jobs "
                  f"{summary['peak_concurrent_gb']:.2f} GB", flush=True)
            if not args.reference_dir:
                reference.unlink()
            if summary["status"] != "ok":
                break
        print("\n== summary")
        print(pd.DataFrame(summaries).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        if len(tables) > 1:
            print("\n== growth of the sampled peak per job")
            with pd.option_context("display.width", 250):
                print(growth(tables).to_string(float_format=lambda v: f"{v:.2f}"))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
