"""Training-curve figure from a training_log.csv."""

import numpy as np
import pandas as pd
import pytest

from deconflow.errors import DeconflowError
from deconflow.plots import loss_terms, read_training_log, training_curves_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _training_log(path, n_epochs=4, seed=0):
    """A log with the columns deconflow.training writes (two loss terms, as scaden/sparse-like models)."""
    rng = np.random.default_rng(seed)
    epochs = np.arange(1, n_epochs + 1)
    decay = 1.0 / epochs
    frame = pd.DataFrame({
        "epoch": epochs,
        "train_mse": 0.01 * decay, "train_kl": decay + rng.uniform(0, 0.1, n_epochs),
        "train_total": 1.01 * decay,
        "val_mse": 0.012 * decay, "val_kl": 1.1 * decay, "val_total": 1.112 * decay,
        "val_selection": 1.112 * decay, "val_mae": 0.05 * decay, "val_mean_r": 1 - 0.5 * decay,
        "lr": 1e-3 * decay, "seconds": rng.uniform(1, 2, n_epochs),
    })
    frame.to_csv(path, index=False, float_format="%.6g")
    return path


def test_loss_terms_pair_train_and_validation_with_total_last(tmp_path):
    history = read_training_log(_training_log(tmp_path / "training_log.csv"))
    assert loss_terms(history) == ["mse", "kl", "total"]  # val_selection/val_mae are not train/val pairs


def test_training_curves_write_a_png_that_does_not_depend_on_wall_clock(tmp_path):
    log_a = _training_log(tmp_path / "a.csv", seed=0)
    log_b = tmp_path / "b.csv"
    other = pd.read_csv(log_a)
    other["seconds"] *= 7  # only the wall clock differs
    other.to_csv(log_b, index=False, float_format="%.6g")
    for log, png in ((log_a, tmp_path / "a.png"), (log_b, tmp_path / "b.png")):
        training_curves_plot(read_training_log(log), png, title="tiny / scaden", source=log)
    data = (tmp_path / "a.png").read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000
    assert data == (tmp_path / "b.png").read_bytes()  # deterministic; `seconds` is not plotted
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporary left


@pytest.mark.parametrize(
    ("drop", "problem"),
    [(["val_mae"], "val_mae"), (["val_mean_r"], "val_mean_r"), (["epoch"], "epoch"),
     (["val_mse", "val_kl", "val_total"], "no loss term")],
)
def test_a_log_without_the_expected_columns_is_refused(tmp_path, drop, problem):
    path = _training_log(tmp_path / "training_log.csv")
    pd.read_csv(path).drop(columns=drop).to_csv(path, index=False)
    with pytest.raises(DeconflowError) as info:
        read_training_log(path)
    assert info.value.path == str(path)
    assert problem in info.value.problem
    assert "train_model" in info.value.fix
    assert not (tmp_path / "out.png").exists()


def test_a_log_without_epochs_or_file_is_refused(tmp_path):
    path = _training_log(tmp_path / "training_log.csv")
    pd.read_csv(path).iloc[:0].to_csv(path, index=False)  # header only
    with pytest.raises(DeconflowError, match="no epochs"):
        read_training_log(path)
    with pytest.raises(DeconflowError, match="does not exist") as info:
        read_training_log(tmp_path / "missing.csv")
    assert info.value.path == str(tmp_path / "missing.csv")


def test_an_in_memory_table_is_checked_too(tmp_path):
    history = pd.read_csv(_training_log(tmp_path / "training_log.csv")).drop(columns="val_mean_r")
    with pytest.raises(DeconflowError, match="val_mean_r") as info:
        training_curves_plot(history, tmp_path / "out.png", source="mem.csv")
    assert info.value.path == "mem.csv" and not (tmp_path / "out.png").exists()
