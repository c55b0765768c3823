"""Accuracy and memory of the peers against the cells per type they are given (a benchmark: it
prints figures, it is not a test). It is how `peer_max_cells_per_type` was chosen
(docs/atlas-peers.md).

    python -m deconflow.benchmarks.peer_cap --reference REF.h5ad --split results/D/split/cells.tsv \\
        --mixtures results/D/pseudobulk/val.h5 --caps 10 20 40 0 [--seeds 1 2 3] [--peers rectangle dtangle]

For every cap (0: every train-pool cell) and seed it writes the train pool exactly as rule
``peer_reference`` does (``deconflow.peers.write_train_pool_reference``: the cells of the split's
``train`` pool, at most ``cap`` per type, drawn with ``seed``, on the genes of the mixtures), runs
each peer on the mixtures through its own venv (as ``run_peer``: Rectangle builds its signature from
those cells; dtangle takes their per-type mean CPM) and prints: cells given, the seconds and peak
resident memory (``ru_maxrss`` of the peer's process, from ``os.wait4``) of the signature step, and
the CCC, RMSE and mean per-type Pearson r of the cell fractions against the mixtures' truth. Use
*validation* mixtures (never the test mixtures) to choose a setting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def run_measured(cmd: list[str], log_path: Path) -> tuple[float, float]:
    """Run ``cmd`` (output to ``log_path``); (seconds, peak resident GB of that process). A
    failure raises RuntimeError with the log's last line."""
    start = time.perf_counter()
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONNOUSERSITE": "1", "PYTHONPATH": "", "PYTHONHASHSEED": "0"})
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        lines = log_path.read_text().strip().splitlines()
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {lines[-1] if lines else 'no output'} (log {log_path})")
    return seconds, usage.ru_maxrss * 1024 / 1e9


def one_run(peer: str, python: Path, reference, train_rows, mixtures, cap: int | None, seed: int, work: Path,
            settings: dict) -> dict:
    import anndata as ad

    from ..evaluation import compute_metrics
    from ..peers import (peer_command, peer_spec, read_raw_output, to_cell_fractions, write_peer_bulk,
                         write_profiles, write_train_pool_reference)
    from ..signature import cell_type_library_size, cell_type_mean_cpm

    spec = peer_spec(peer)
    genes = np.isin(reference.genes, mixtures.feature_names.astype(str))
    cells_file = work / "reference.h5ad"
    kept = write_train_pool_reference(reference, train_rows, genes, cells_file, cap, seed)
    bulk_file = work / "bulk.h5ad"
    shared = reference.genes[genes]
    columns = pd.Index(mixtures.feature_names.astype(str)).get_indexer(shared)
    write_peer_bulk(mixtures.features[:, columns].astype(np.float64), mixtures.sample_ids.astype(str), shared, bulk_file)
    cells = ad.read_h5ad(cells_file)
    labels = cells.obs["cell_type"].to_numpy(dtype=str)
    library_size = cell_type_library_size(cells.X, labels, reference.cell_types).to_numpy(dtype=np.float64)
    options = ["--threads", "2", "--settings", json.dumps(settings)]
    seconds = peak = float("nan")
    if spec.reference == "cells":
        signature = work / "signature.pkl"
        seconds, peak = run_measured(peer_command(peer, python, "signature", "--reference", cells_file, "--out", signature,
                                                  *options, "--log", work / "signature.log"), work / "signature.log")
    else:
        signature = work / "profiles.tsv"
        write_profiles(cell_type_mean_cpm(cells.X, labels, cells.var_names.to_numpy(dtype=str), reference.cell_types), signature)
    del cells
    raw = work / "raw.csv"
    run_measured(peer_command(peer, python, "deconvolve", "--reference", signature, "--bulk", bulk_file, "--out", raw,
                              *options, "--log", work / "deconvolve.log"), work / "deconvolve.log")
    predicted = to_cell_fractions(read_raw_output(raw), peer, reference.cell_types, library_size, source=raw)
    order = pd.Index(mixtures.cell_types.astype(str)).get_indexer(reference.cell_types)
    truth = mixtures.proportions[:, order]
    metrics = compute_metrics(truth, predicted.loc[mixtures.sample_ids.astype(str)].to_numpy(), reference.cell_types)
    return {"peer": peer, "cap": cap or "all", "seed": seed, "cells": kept["cells"],
            "largest_type": max(kept["kept"].values()), "signature_s": seconds, "signature_peak_gb": peak,
            "ccc": metrics["ccc"], "rmse": metrics["rmse"], "mean_r": metrics["mean_r"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="the single-cell reference (h5ad, raw counts)")
    parser.add_argument("--label-key", default="cell_type")
    parser.add_argument("--split", required=True, help="a run's results/<dataset>/split/cells.tsv (its train pool is used)")
    parser.add_argument("--mixtures", required=True, help="validation mixtures (results/<dataset>/pseudobulk/val.h5)")
    parser.add_argument("--caps", type=int, nargs="+", required=True, help="cells per type; 0 = every train-pool cell")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--n-mixtures", type=int, default=None, help="only the first N mixtures (Rectangle fits each sample)")
    parser.add_argument("--peers", nargs="+", default=["rectangle"])
    parser.add_argument("--peer-env-dir", default=".peers")
    parser.add_argument("--settings", default="{}", help="JSON: {peer: keyword arguments} (config `peer_settings`)")
    parser.add_argument("--out", default=None, help="also write the table here (CSV)")
    args = parser.parse_args(argv)

    from ..io import open_reference, read_mixtures
    from ..peers import ensure_env
    from ..split import read_split

    reference = open_reference(args.reference, args.label_key)
    train_rows = np.flatnonzero(read_split(args.split, reference.cell_ids) == "train")
    mixtures = read_mixtures(args.mixtures)
    if args.n_mixtures:
        first = slice(0, args.n_mixtures)
        mixtures.features, mixtures.proportions = mixtures.features[first], mixtures.proportions[first]
        mixtures.sample_ids = mixtures.sample_ids[first]
    settings = json.loads(args.settings)
    rows = []
    for peer in args.peers:
        python = ensure_env(peer, args.peer_env_dir)
        for cap in args.caps:
            for seed in args.seeds if cap else args.seeds[:1]:
                with tempfile.TemporaryDirectory(prefix="deconflow-peer-cap-") as tmp:
                    rows.append(one_run(peer, python, reference, train_rows, mixtures, cap or None, seed, Path(tmp),
                                        settings.get(peer, {})))
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    table = pd.DataFrame(rows)
    print(f"\n== {args.mixtures}: {len(mixtures.sample_ids)} mixtures; train pool {len(train_rows):,} cells of {args.reference}")
    with pd.option_context("display.width", 200):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        summary = table.groupby(["peer", "cap"], sort=False)[["cells", "signature_s", "signature_peak_gb", "ccc", "rmse", "mean_r"]]
        print("\n== mean over seeds")
        print(summary.mean().to_string(float_format=lambda v: f"{v:.4f}"))
    if args.out:
        table.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
