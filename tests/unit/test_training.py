import logging

import numpy as np
import pandas as pd
import pytest

from deconflow.errors import DeconflowError
from deconflow.models import load_model, read_checkpoint
from deconflow.models import hpvade
from deconflow.monitor import format_history, monitor
from deconflow.training import train_from_files, train_learner

from learned_fixtures import TINY_HPVADE, TINY_SCADEN, synthetic, write_files

RNA = {"label_key": "cell_type", "counts_layer": None, "modality": "rna"}


def outputs(folder):
    return {"best": folder / "checkpoint_best.pt", "last": folder / "checkpoint_last.pt", "history": folder / "training_log.csv",
            "tensorboard_dir": folder / "tensorboard"}


def run(tmp_path, name, settings, model="scaden", seed=0, paths=None):
    paths = paths or write_files(tmp_path)[0]
    out = outputs(tmp_path / name)
    train_from_files(model, paths["train"], paths["val"], paths["signature"], None, None, RNA, settings, seed, out)
    return out, paths


def without_seconds(path):
    return pd.read_csv(path).drop(columns="seconds").to_csv(index=False)


def test_outputs_and_log_columns(tmp_path):
    out, _ = run(tmp_path, "a", {**TINY_HPVADE, "epochs": 2}, model="hpvade")
    history = pd.read_csv(out["history"])
    assert list(history["epoch"]) == [1, 2]
    for column in ["train_bulk", "train_bulk_recon", "train_total", "val_bulk", "val_total", "val_selection", "val_mae", "val_mean_r", "lr", "seconds"]:
        assert column in history.columns
    best = read_checkpoint(out["best"])
    prov = best["provenance"]
    assert {"deconflow_version", "torch_version", "input_checksums", "device", "settings"} <= set(prov)
    assert prov["device"] == "cpu" and prov["input_checksums"]["train"].startswith("sha256:")
    assert "resume" in read_checkpoint(out["last"])
    assert out["tensorboard_dir"].is_dir()


def test_cpu_runs_are_deterministic(tmp_path):
    paths = write_files(tmp_path)[0]
    settings = {**TINY_SCADEN, "epochs": 3}
    a, _ = run(tmp_path, "a", settings, paths=paths)
    b, _ = run(tmp_path, "b", settings, paths=paths)
    # every column is byte-identical except the wall-clock seconds
    assert without_seconds(a["history"]) == without_seconds(b["history"])
    _, val = write_files(tmp_path / "v")
    np.testing.assert_array_equal(load_model(a["best"]).predict(val.features), load_model(b["best"]).predict(val.features))


def test_resume_from_checkpoint_last(tmp_path, caplog, monkeypatch):
    paths = write_files(tmp_path)[0]
    settings = {**TINY_SCADEN, "epochs": 4, "patience": 10}
    full, _ = run(tmp_path, "full", settings, paths=paths)
    part = outputs(tmp_path / "part")

    # interrupt the run after epoch 2 by raising from the per-epoch log line
    import deconflow.training as training

    original = training._format_row

    def interrupt(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt
        return original(row)

    monkeypatch.setattr(training, "_format_row", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_from_files("scaden", paths["train"], paths["val"], paths["signature"], None, None, RNA, settings, 0, part)
    monkeypatch.setattr(training, "_format_row", original)
    # epoch 3's checkpoint and log row were written before the (interrupted) log line
    assert read_checkpoint(part["last"])["resume"]["epoch"] == 3

    with caplog.at_level(logging.INFO):
        train_from_files("scaden", paths["train"], paths["val"], paths["signature"], None, None, RNA, settings, 0, part)
    assert "resuming from" in caplog.text and "at epoch 4" in caplog.text
    assert without_seconds(part["history"]) == without_seconds(full["history"])


def test_changed_settings_start_fresh(tmp_path, caplog):
    paths = write_files(tmp_path)[0]
    run(tmp_path, "a", {**TINY_SCADEN, "epochs": 2}, paths=paths)
    with caplog.at_level(logging.INFO):
        out, _ = run(tmp_path, "a", {**TINY_SCADEN, "epochs": 3}, paths=paths)
    assert "settings changed (epochs)" in caplog.text
    assert list(pd.read_csv(out["history"])["epoch"]) == [1, 2, 3]


def test_changed_inputs_start_fresh(tmp_path, caplog):
    paths = write_files(tmp_path)[0]
    settings = {**TINY_SCADEN, "epochs": 2}
    out, _ = run(tmp_path, "a", settings, paths=paths)
    other = write_files(tmp_path / "other", seed=1)[0]
    paths = {**paths, "train": other["train"]}
    with caplog.at_level(logging.INFO):
        run(tmp_path, "a", settings, paths=paths)
    assert "inputs changed (train)" in caplog.text


def test_nan_loss_names_epoch_and_term(tmp_path, monkeypatch):
    train, val, signature, context = synthetic()
    original = hpvade.HPVADELearner.loss_terms

    def poisoned(self, batch):
        terms = original(self, batch)
        terms["bulk_recon"] = terms["bulk_recon"] * float("nan")
        return terms

    monkeypatch.setattr(hpvade.HPVADELearner, "loss_terms", poisoned)
    with pytest.raises(DeconflowError, match=r"'bulk_recon'.*epoch 1"):
        train_learner("hpvade", train, val, signature, {**TINY_HPVADE, "epochs": 2}, 0, context=context)


def test_missing_signature_file_is_an_error(tmp_path):
    paths = write_files(tmp_path)[0]
    paths["signature"].unlink()
    with pytest.raises(DeconflowError, match="signature file is missing"):
        run(tmp_path, "a", {**TINY_HPVADE, "epochs": 1}, model="hpvade", paths=paths)


def test_monitor_prints_latest_epochs(tmp_path, capsys):
    out, _ = run(tmp_path, "a", {**TINY_SCADEN, "epochs": 3})
    monitor(out["history"], n_last=2)
    text = capsys.readouterr().out
    assert "3 epochs" in text and "val_mae" in text
    assert "best epoch" in format_history(pd.read_csv(out["history"]))


def test_lr_schedule_warms_up_linearly_then_cosine_decays_to_one_percent():
    from deconflow.training import _lr_factor

    factor = _lr_factor("cosine", warmup_epochs=4, epochs=14)
    assert [factor(e) for e in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4) == pytest.approx(1.0)
    decay = [factor(e) for e in range(4, 15)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert factor(14) == pytest.approx(0.01)
    assert _lr_factor("constant", 0, 10)(7) == 1.0
