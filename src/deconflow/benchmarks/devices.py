"""Training on CPU and on a CUDA GPU, side by side: seconds per epoch, peak memory, held-out accuracy
and the cross-device checks (a GPU checkpoint read on a CPU-only process, resume across devices).

Two steps, so the device machine needs neither Snakemake nor the config schema:

    # here: resolve the configs as the workflow does (schema defaults filled), cap the epochs
    python -m deconflow.benchmarks.devices plan --configs config/config.yaml config/full.yaml \\
        --dataset pbmc --cap full:hpvade=10 --cap full:scaden=5 --out .devrun/plan.json
    # on any machine (CUDA chosen by ``train.device: auto``; ``--device cpu`` forces the CPU)
    python -m deconflow.benchmarks.devices run --plan .devrun/plan.json --work /tmp/dev \\
        --out gpu.json [--configs full] [--cross-device] [--budget-s 420]
    # both result files as one markdown table (docs/benchmarks.md)
    python -m deconflow.benchmarks.devices table gpu.json cpu.json

``run`` makes each config's pseudobulk (train / val / test) from the reference and split with the
pipeline's own calls and seeds (``make_pseudobulk``: seed × 1000 + split index), trains every
planned model with ``train_from_files`` (the ``train_model`` rule's entry point) and scores its
best checkpoint on the test mixtures with ``evaluate_checkpoint`` (the ``evaluate_model`` rule's).
Figures per run: wall seconds, per-epoch seconds (mean over the epochs after the first, which
carries CUDA start-up), peak GPU memory (``torch.cuda.max_memory_allocated``), held-out r / CCC /
MAE and a checksum of the test mixtures (equal checksums: both machines scored the same mixtures).

``--cross-device`` (needs CUDA) adds, on the first config's hpvade: the best GPU checkpoint
deconvolved by ``deconflow deconvolve`` in a process that sees no GPU (``CUDA_VISIBLE_DEVICES=``)
and compared with the same checkpoint's in-process prediction; and a 3-epoch run interrupted
after epoch 2 on one device and resumed from ``checkpoint_last.pt`` on the other, both ways.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
MODELS = ("hpvade", "scaden")
log = logging.getLogger("deconflow.benchmarks.devices")


# --------------------------------------------------------------------------- plan (here)
def resolved_config(path) -> dict:
    """A config file with the workflow schema's defaults filled in (as the Snakefile validates it)."""
    import yaml
    from snakemake.utils import validate

    config = yaml.safe_load(Path(path).read_text())
    validate(config, str(Path("workflow/schemas/config.schema.yaml").resolve()))
    return config


def config_plan(config: dict, dataset: str, caps: dict) -> dict:
    """What ``run`` needs of one config: reader and pseudobulk settings with their seeds, and per
    learned model the ``train_model`` rule's settings (``common.smk: model_settings``) with the
    epochs capped by ``caps`` ({model: epochs})."""
    ds = config["datasets"][dataset]
    pseudobulk = {**config["pseudobulk"], **ds.get("pseudobulk", {})}
    seed = int(config["seed"])
    train = config.get("train", {})
    shared = {k: v for k, v in train.items() if not isinstance(v, dict)}
    models = {}
    for model in MODELS:
        if model not in ds.get("models", config["models"]):
            continue
        settings = {**shared, **train.get(model, {})}
        if model == "hpvade":
            settings["linear_fit"] = dict(config["linear_fit"])
        if model in caps:
            settings["epochs"] = min(int(settings.get("epochs", caps[model])), caps[model])
        models[model] = settings
    return {
        "seed": seed,
        "reader": {"label_key": ds.get("label_key", "cell_type"), "counts_layer": ds.get("counts_layer"),
                   "donor_key": ds.get("donor_key"), "labels": ds.get("labels"), "gene_column": ds.get("gene_column"),
                   "modality": "rna"},
        "pseudobulk": {split: {"n_mixtures": int(pseudobulk[f"n_{split}"]), "cells_per_mixture": int(pseudobulk["cells_per_mixture"]),
                               "sparse_fraction": float(pseudobulk["sparse_fraction"]), "dirichlet_alpha": float(pseudobulk["dirichlet_alpha"]),
                               "min_present": int(pseudobulk["min_present"]), "max_present": pseudobulk["max_present"],
                               "seed": seed * 1000 + i} for i, split in enumerate(SPLITS)},
        "models": models,
    }


def plan_main(args) -> None:
    caps: dict[str, dict[str, int]] = {}
    for cap in args.cap:  # name:model=epochs
        name_model, epochs = cap.split("=")
        name, model = name_model.split(":")
        caps.setdefault(name, {})[model] = int(epochs)
    configs = {}
    for path in args.configs:
        name = "default" if Path(path).name == "config.yaml" else Path(path).stem
        config = resolved_config(path)
        plan = config_plan(config, args.dataset, caps.get(name, {}))
        plan["config"] = str(path)
        ds = config["datasets"][args.dataset]
        plan["reference"] = ds["reference"]
        configs[name] = plan
    results = Path(f"results/{args.dataset}")
    out = {"dataset": args.dataset, "split": str(results / "split/cells.tsv"), "signature": str(results / "signature/signature.tsv"),
           "bulk": args.bulk, "configs": configs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}: configs {list(configs)}, models {[list(c['models']) for c in configs.values()]}")


# --------------------------------------------------------------------------- run (any machine)
def make_mixtures(plan: dict, config: dict, folder: Path) -> dict:
    """The config's train / val / test mixtures (``make_pseudobulk``'s calls and seeds); seconds per split."""
    from ..io import open_reference
    from ..pseudobulk import MixtureSettings, pseudobulk_for_split
    from ..split import read_split

    reader = config["reader"]
    reference = open_reference(config["reference"], reader["label_key"], reader["counts_layer"], reader["donor_key"],
                               labels=reader["labels"], gene_column=reader["gene_column"])
    splits = read_split(plan["split"], reference.cell_ids)
    folder.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for split in SPLITS:
        path = folder / f"{split}.h5"
        if path.exists():
            continue
        settings = dict(config["pseudobulk"][split])
        seed = settings.pop("seed")
        start = time.perf_counter()
        pseudobulk_for_split(reference, splits, split, MixtureSettings(**settings), seed, path)
        seconds[split] = round(time.perf_counter() - start, 2)
    return seconds


def mixtures_checksum(path) -> str:
    """sha256 of a mixture file's features and proportions (float32 bytes), not of the HDF5 container."""
    from ..io import read_mixtures

    mixtures = read_mixtures(path, expect_normalization="cpm")
    digest = hashlib.sha256(np.ascontiguousarray(mixtures.features, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(mixtures.proportions, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def train_one(plan: dict, config: dict, model: str, mixtures: Path, folder: Path, device: str, epochs: int | None = None) -> dict:
    """Train ``model`` into ``folder`` on ``device`` with ``train_from_files``; the run's figures."""
    import torch

    from ..training import train_from_files

    settings = {**config["models"][model], "device": device}
    if epochs is not None:
        settings["epochs"] = epochs
    outputs = {"best": folder / "checkpoint_best.pt", "last": folder / "checkpoint_last.pt",
               "history": folder / "training_log.csv", "tensorboard_dir": None}
    folder.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and device != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    train_from_files(model, mixtures / "train.h5", mixtures / "val.h5", plan["signature"], config["reference"], plan["split"],
                     config["reader"], settings, config["seed"], outputs)
    wall = time.perf_counter() - start
    import pandas as pd

    history = pd.read_csv(outputs["history"])
    seconds = history["seconds"].to_numpy()
    return {
        "wall_s": round(wall, 2),
        "epochs": int(len(history)),
        "first_epoch_s": round(float(seconds[0]), 3),
        "epoch_s": round(float(seconds[1:].mean() if len(seconds) > 1 else seconds[0]), 3),
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1e9, 3) if cuda else None,
        "device": torch.load(outputs["best"], map_location="cpu", weights_only=False)["provenance"]["device"],
    }


def score(best, test) -> dict:
    from ..evaluation import evaluate_checkpoint

    _, metrics = evaluate_checkpoint(best, test, "cpm")
    return {"r": round(metrics["mean_r"], 4), "ccc": round(metrics["ccc"], 4), "mae": round(metrics["mae"], 4)}


def cpu_only_deconvolve(best, bulk, folder: Path) -> dict:
    """``deconflow deconvolve`` of a GPU checkpoint in a process that sees no GPU
    (``CUDA_VISIBLE_DEVICES=``) and in one that sees it: both must write the same bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    result = {}
    for label, visible in (("no_gpu", ""), ("gpu_visible", os.environ.get("CUDA_VISIBLE_DEVICES"))):
        env = dict(os.environ)
        if visible is None:
            env.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            env["CUDA_VISIBLE_DEVICES"] = visible
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"], env=env,
                               capture_output=True, text=True)
        out = folder / f"deconvolve_{label}.csv"
        done = subprocess.run([sys.executable, "-m", "deconflow.cli", "deconvolve", "--model", str(best), "--bulk", str(bulk),
                               "--out", str(out)], env=env, capture_output=True, text=True)
        result[label] = {"cuda_visible": probe.stdout.strip(), "rc": done.returncode, "stderr_tail": done.stderr[-300:],
                         "sha256": hashlib.sha256(out.read_bytes()).hexdigest()[:16] if out.exists() else None}
    result["identical"] = result["no_gpu"]["sha256"] is not None and result["no_gpu"]["sha256"] == result["gpu_visible"]["sha256"]
    return result


def interrupted_then_resumed(plan, config, model, mixtures, folder: Path, first: str, second: str) -> dict:
    """3 epochs: epochs 1-2 on ``first`` (interrupted before epoch 3's log line, as a killed job),
    then resumed from ``checkpoint_last.pt`` on ``second``; the log rows and the resume line."""
    import pandas as pd

    from .. import training

    original = training._format_row

    def interrupt(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt
        return original(row)

    training._format_row = interrupt
    try:
        train_one(plan, config, model, mixtures, folder, first, epochs=3)
    except KeyboardInterrupt:
        pass
    finally:
        training._format_row = original
    last = folder / "checkpoint_last.pt"
    from ..models import read_checkpoint

    stored_epoch = int(read_checkpoint(last)["resume"]["epoch"])
    records = []

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler, logger = Catch(), logging.getLogger("deconflow")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        figures = train_one(plan, config, model, mixtures, folder, second, epochs=3)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    history = pd.read_csv(folder / "training_log.csv")
    return {"first": first, "second": second, "interrupted_after_epoch": stored_epoch, "epochs_logged": history["epoch"].tolist(),
            "resume_line": next((m for m in records if m.startswith("resuming from")), None),
            "best_device": figures["device"]}


def cross_device_checks(plan: dict, config: dict, folder: Path, device_label: str, results: dict) -> None:
    """On the config's hpvade (else its first model): a CPU-only ``deconflow deconvolve`` of the GPU
    checkpoint, and resume across devices both ways; figures to ``results["checks"]``."""
    model = "hpvade" if "hpvade" in config["models"] else next(iter(config["models"]))
    mixtures = folder / "pseudobulk"
    best = folder / model / device_label / "checkpoint_best.pt"
    checks = [("cpu_only_deconvolve", lambda: cpu_only_deconvolve(best, plan["bulk"], folder / model))]
    for first, second in (("cuda", "cpu"), ("cpu", "cuda")):
        checks.append((f"resume_{first}_to_{second}", lambda f=first, s=second: interrupted_then_resumed(
            plan, config, model, mixtures, folder / f"resume_{f}_{s}", f, s)))
    for check, fn in checks:
        try:
            results["checks"].append({"check": check, **fn()})
        except Exception:
            results["errors"].append({"check": check, "traceback": traceback.format_exc()[-2000:]})


def run_main(args) -> None:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    started = time.perf_counter()
    plan = json.loads(Path(args.plan).read_text())
    work = Path(args.work)
    device = "cpu" if args.device == "cpu" else "auto"
    results = {"machine": {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                           "cpus": os.cpu_count(), "train_device": device}, "runs": [], "checks": [], "errors": []}

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))

    def over_budget() -> bool:
        return args.budget_s is not None and time.perf_counter() - started > args.budget_s

    names = args.configs or list(plan["configs"])
    for name in names:
        config = plan["configs"][name]
        mixtures = work / name / "pseudobulk"
        try:
            seconds = make_mixtures(plan, config, mixtures)
            results["runs"].append({"config": name, "step": "pseudobulk", "seconds": seconds,
                                    "test_checksum": mixtures_checksum(mixtures / "test.h5")})
        except Exception:
            results["errors"].append({"config": name, "step": "pseudobulk", "traceback": traceback.format_exc()[-2000:]})
            save()
            continue
        for model in args.models or list(config["models"]):
            if over_budget():
                results["errors"].append({"config": name, "model": model, "step": "skipped: over --budget-s"})
                continue
            folder = work / name / model / args.device
            try:
                figures = train_one(plan, config, model, mixtures, folder, device)
                figures.update(score(folder / "checkpoint_best.pt", mixtures / "test.h5"))
                results["runs"].append({"config": name, "model": model, **figures})
                log.info("%s %s: %s", name, model, figures)
            except Exception:
                results["errors"].append({"config": name, "model": model, "traceback": traceback.format_exc()[-2000:]})
            save()
        if args.cross_device and torch.cuda.is_available() and name == names[0]:
            cross_device_checks(plan, config, work / name, args.device, results)
            save()
    results["total_s"] = round(time.perf_counter() - started, 1)
    save()
    print(json.dumps(results, indent=1))


# --------------------------------------------------------------------------- table
def table_main(args) -> None:
    """One markdown row per (config, model), GPU columns beside CPU columns."""
    runs = {}
    for path in args.results:
        data = json.loads(Path(path).read_text())
        where = "gpu" if data["machine"]["cuda"] and data["machine"]["train_device"] != "cpu" else "cpu"
        for run in data["runs"]:
            if "model" in run:
                runs.setdefault((run["config"], run["model"]), {})[where] = run
    print("| config | model | epochs CPU / GPU | s/epoch CPU | s/epoch GPU | speed-up | wall s CPU / GPU | peak GPU GB "
          "| CPU r / CCC / MAE | GPU r / CCC / MAE |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def acc(run):
        return f"{run['r']:.3f} / {run['ccc']:.3f} / {run['mae']:.3f}" if run else "–"

    for (config, model), both in runs.items():
        cpu, gpu = both.get("cpu", {}), both.get("gpu", {})
        speed = f"{cpu['epoch_s'] / gpu['epoch_s']:.1f}×" if cpu and gpu else "–"
        print(f"| {config} | {model} | {cpu.get('epochs', '–')} / {gpu.get('epochs', '–')} | {cpu.get('epoch_s', '–')} | "
              f"{gpu.get('epoch_s', '–')} | {speed} | {cpu.get('wall_s', '–')} / {gpu.get('wall_s', '–')} | "
              f"{gpu.get('peak_gpu_gb', '–')} | {acc(cpu)} | {acc(gpu)} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--configs", nargs="+", default=["config/config.yaml", "config/full.yaml"])
    p.add_argument("--dataset", default="pbmc")
    p.add_argument("--bulk", default="resources/pbmc/bulk.tsv", help="a real bulk for the CPU-only deconvolve check")
    p.add_argument("--cap", action="append", default=[], help="CONFIG:MODEL=EPOCHS, e.g. full:scaden=5")
    p.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--plan", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--device", choices=["auto", "cpu"], default="auto")
    r.add_argument("--configs", nargs="*")
    r.add_argument("--models", nargs="*")
    r.add_argument("--cross-device", action="store_true")
    r.add_argument("--budget-s", type=float, default=None, help="skip the remaining trainings after this many seconds")
    t = sub.add_parser("table")
    t.add_argument("results", nargs="+")
    args = parser.parse_args(argv)
    {"plan": plan_main, "run": run_main, "table": table_main}[args.command](args)


if __name__ == "__main__":
    main()
