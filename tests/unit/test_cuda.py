"""Training on a CUDA GPU: runs only where torch sees one (``pytest -m gpu``), skipped elsewhere.

What must hold on CUDA: the trainer picks the GPU under ``device: auto`` with bf16 autocast, the
checkpoints it writes load and predict on a process without a GPU, and a run interrupted on one
device resumes from ``checkpoint_last.pt`` on the other with the epochs it had done kept.
"""

import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from deconflow.models import load_model, read_checkpoint
from deconflow.training import train_from_files

from learned_fixtures import TINY_HPVADE, TINY_SCADEN, write_files

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch: the gpu tests run on a GPU machine only"),
]

RNA = {"label_key": "cell_type", "counts_layer": None, "modality": "rna"}
# scaden at its published learning rate (1e-4) barely moves in a few tiny epochs: 1e-3 here
TINY = {"hpvade": TINY_HPVADE, "scaden": {**TINY_SCADEN, "learning_rate": 1e-3}}


def outputs(folder):
    return {"best": folder / "checkpoint_best.pt", "last": folder / "checkpoint_last.pt", "history": folder / "training_log.csv",
            "tensorboard_dir": None}


def train(paths, folder, model, device, epochs=3):
    out = outputs(folder)
    settings = {**TINY[model], "epochs": epochs, "patience": 10, "device": device, "mixed_precision": True}
    train_from_files(model, paths["train"], paths["val"], paths["signature"], None, None, RNA, settings, 0, out)
    return out


@pytest.mark.parametrize("model", ["hpvade", "scaden"])
def test_auto_trains_on_cuda_and_the_checkpoint_predicts_on_cpu(tmp_path, model):
    paths, val = write_files(tmp_path)
    out = train(paths, tmp_path / "gpu", model, "auto", epochs=8)
    best = read_checkpoint(out["best"])
    assert best["provenance"]["device"].startswith("cuda (")
    assert len(pd.read_csv(out["history"])) == 8
    fitted = load_model(out["best"])
    assert all(p.device.type == "cpu" for p in fitted.net.parameters())
    predicted = fitted.predict(val.features)
    assert np.isfinite(predicted).all()
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, atol=1e-5)
    # trained at all: better than predicting the mean proportions
    assert np.abs(predicted - val.proportions).mean() < np.abs(val.proportions.mean(axis=0) - val.proportions).mean()


def test_gpu_checkpoint_deconvolves_in_a_process_without_gpu(tmp_path):
    paths, val = write_files(tmp_path)
    out = train(paths, tmp_path / "gpu", "hpvade", "cuda", epochs=2)
    bulk = tmp_path / "bulk.tsv"
    pd.DataFrame(val.features[:5].T, index=pd.Index(val.feature_names, name="gene"),
                 columns=[f"s{i}" for i in range(5)]).to_csv(bulk, sep="\t")
    written = {}
    for label, visible in (("no_gpu", ""), ("gpu", os.environ.get("CUDA_VISIBLE_DEVICES"))):
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        target = tmp_path / f"{label}.csv"
        done = subprocess.run([sys.executable, "-m", "deconflow.cli", "deconvolve", "--model", str(out["best"]), "--bulk", str(bulk),
                               "--out", str(target), "--min-overlap", "10", "--mixtures", str(paths["train"])],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        written[label] = target.read_bytes()
    assert written["no_gpu"] == written["gpu"]


@pytest.mark.parametrize("first,second", [("cuda", "cpu"), ("cpu", "cuda")])
def test_resume_across_devices(tmp_path, caplog, monkeypatch, first, second):
    paths, _ = write_files(tmp_path)
    import deconflow.training as training

    original = training._format_row

    def interrupt(row):  # as a killed job: epoch 2's checkpoints are written, its log line is not
        if row["epoch"] == 2:
            raise KeyboardInterrupt
        return original(row)

    monkeypatch.setattr(training, "_format_row", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(paths, tmp_path / "run", "scaden", first)
    monkeypatch.setattr(training, "_format_row", original)
    assert read_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["resume"]["epoch"] == 2

    with caplog.at_level(logging.INFO):
        out = train(paths, tmp_path / "run", "scaden", second)
    assert "resuming from" in caplog.text and "at epoch 3" in caplog.text
    assert pd.read_csv(out["history"])["epoch"].tolist() == [1, 2, 3]
    last = read_checkpoint(out["last"])
    assert last["provenance"]["device"].startswith("cuda (" if second == "cuda" else "cpu")
