"""Accuracy metrics for predicted vs true proportions.

All metrics take two (samples x cell types) matrices. "Present" means a proportion ≥
``presence_threshold`` (default 1 %), the level below which cfDNA assays call a tissue absent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .threads import with_fixed_threads

PRESENCE_THRESHOLD = 0.01


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN when either side is constant (r is undefined there)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc**2).sum() * (yc**2).sum())
    return float((xc * yc).sum() / denom) if denom > 0 else float("nan")


def lins_ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Lin's concordance correlation: 2 cov / (var_x + var_y + (mean_x - mean_y)^2), population moments."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    cov = ((x - x.mean()) * (y - y.mean())).mean()
    denom = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")


def compute_metrics(true: np.ndarray, pred: np.ndarray, cell_types, presence_threshold: float = PRESENCE_THRESHOLD) -> dict:
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: true {true.shape} vs predicted {pred.shape}")
    err = pred - true
    per_type_r = {str(t): pearson_r(true[:, k], pred[:, k]) for k, t in enumerate(cell_types)}
    finite_r = [r for r in per_type_r.values() if np.isfinite(r)]
    present_true = true >= presence_threshold
    present_pred = pred >= presence_threshold
    absent = ~present_true
    spurious = absent & (pred > presence_threshold)
    n_absent = int(absent.sum())
    ratio = pred[present_true] / true[present_true]
    return {
        "n_samples": int(true.shape[0]),
        "n_cell_types": int(true.shape[1]),
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "per_cell_type_r": per_type_r,
        "mean_r": float(np.mean(finite_r)) if finite_r else float("nan"),
        "ccc": lins_ccc(true, pred),
        "presence_accuracy": float((present_true == present_pred).mean()),
        "spurious_count": int(spurious.sum()),
        "spurious_rate": float(spurious.sum() / n_absent) if n_absent else 0.0,
        "spurious_mass_share": float(pred[spurious].sum() / pred.sum()) if pred.sum() > 0 else 0.0,
        "mean_pred_true_ratio": float(ratio.mean()) if ratio.size else float("nan"),
        "presence_threshold": presence_threshold,
    }


def long_table(true: np.ndarray, pred: np.ndarray, sample_ids, cell_types) -> pd.DataFrame:
    """Long form: one row per (sample, cell type)."""
    sample_ids = np.asarray(sample_ids).astype(str)
    cell_types = np.asarray(cell_types).astype(str)
    n, k = np.asarray(true).shape
    return pd.DataFrame(
        {
            "sample_id": np.repeat(sample_ids, k),
            "cell_type": np.tile(cell_types, n),
            "true_proportion": np.asarray(true, dtype=np.float64).ravel(),
            "predicted_proportion": np.asarray(pred, dtype=np.float64).ravel(),
        }
    )


def wide_from_long(summary: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Inverse of ``long_table``: (true, pred, sample ids, cell types) in first-seen order."""
    samples = list(pd.unique(summary["sample_id"]))
    types = list(pd.unique(summary["cell_type"]))
    true = summary.pivot(index="sample_id", columns="cell_type", values="true_proportion").loc[samples, types]
    pred = summary.pivot(index="sample_id", columns="cell_type", values="predicted_proportion").loc[samples, types]
    return true.to_numpy(), pred.to_numpy(), samples, types


COMPARISON_COLUMNS = [
    "model",
    "kind",
    "mean_r",
    "ccc",
    "mae",
    "rmse",
    "presence_accuracy",
    "spurious_count",
    "spurious_rate",
    "spurious_mass_share",
    "mean_pred_true_ratio",
    "n_samples",
    "interval_coverage",
    "interval_mean_width",
]
#: columns a model may lack (no calibrated intervals: methylation models, peers): NaN there
OPTIONAL_COLUMNS = {"interval_coverage", "interval_mean_width"}


def comparison_table(metrics_by_model: dict[str, dict], kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per model (in the order given), the metrics of ``COMPARISON_COLUMNS``; ``kind`` is
    ``model`` (deconflow's own) or ``peer`` (a published tool run beside them, ``deconflow.peers``),
    from ``kinds`` (default: every row a model). Interval columns are NaN for a row without them."""
    kinds = kinds or {}
    rows = [{"model": name, "kind": kinds.get(name, "model"),
             **{k: m.get(k, float("nan")) if k in OPTIONAL_COLUMNS else m[k] for k in COMPARISON_COLUMNS[2:]}}
            for name, m in metrics_by_model.items()]
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


#: Spike-in levels of the detection-limit table (cfDNA tissue fractions).
SPIKE_LEVELS = (0.001, 0.005, 0.01, 0.05)


def spiked_entries(true: np.ndarray, spike_levels=SPIKE_LEVELS, rel_tolerance: float = 1e-6) -> np.ndarray:
    """Boolean (samples x types): entries whose true fraction equals a spike level (relative
    tolerance ``rel_tolerance``, enough for a float round trip through CSV/HDF5). The simulator's
    spike-in mixtures set one tissue to exactly a level; continuous random proportions hit a level
    with probability ~0."""
    true = np.asarray(true, dtype=np.float64)
    hit = np.zeros(true.shape, dtype=bool)
    for level in spike_levels:
        hit |= np.abs(true - level) <= rel_tolerance * level
    return hit


def detection_limit_table(
    true: np.ndarray,
    pred: np.ndarray,
    spike_levels=SPIKE_LEVELS,
    presence_threshold: float = PRESENCE_THRESHOLD,
    rel_tolerance: float = 1e-6,
    detection_floor: float = 0.0,
) -> pd.DataFrame:
    """Detection limit: for tissues spiked at each level (entries whose true fraction equals the
    level, see ``spiked_entries``), the share detected (predicted > ``detection_floor``, i.e. the
    model calls the tissue present at all), the share predicted ≥ ``presence_threshold``, and the
    mean / median estimated fraction. ``absent_called_rate`` (same on every row) is the share of
    truly absent entries (true = 0) predicted > ``detection_floor``: a detection rate is only
    meaningful against it (NNLS leaves small non-zero fractions on absent tissues)."""
    true = np.asarray(true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    absent = true == 0
    absent_called = float((pred[absent] > detection_floor).mean()) if absent.any() else float("nan")
    rows = []
    for level in spike_levels:
        sel = np.abs(true - level) <= rel_tolerance * level
        n = int(sel.sum())
        values = pred[sel]
        rows.append(
            {
                "spike_level": float(level),
                "n_entries": n,
                "fraction_detected": float((values > detection_floor).mean()) if n else float("nan"),
                "fraction_above_threshold": float((values >= presence_threshold).mean()) if n else float("nan"),
                "mean_estimated": float(values.mean()) if n else float("nan"),
                "median_estimated": float(np.median(values)) if n else float("nan"),
                "absent_called_rate": absent_called,
            }
        )
    return pd.DataFrame(rows)


def features_for_model(mixtures, model, matrix: np.ndarray | None = None) -> np.ndarray:
    """The mixture features (or another samples x features ``matrix`` of the mixtures, e.g. the
    coverage) in the model's feature order (the model may use a gene subset)."""
    position = pd.Index(mixtures.feature_names).get_indexer(model.feature_names)
    if np.any(position < 0):
        missing = np.asarray(model.feature_names)[position < 0][:5].tolist()
        raise ValueError(f"model features missing from the mixtures: {missing}")
    if not np.array_equal(np.asarray(model.cell_types), np.asarray(mixtures.cell_types)):
        raise ValueError(f"model cell types {list(model.cell_types)} differ from mixture cell types {list(mixtures.cell_types)}")
    return (mixtures.features if matrix is None else np.asarray(matrix))[:, position]


@with_fixed_threads
def evaluate_checkpoint(model_path, test_path, normalization: str, presence_threshold: float = PRESENCE_THRESHOLD):
    """Predict the test mixtures with a checkpoint; return (long summary table, metrics dict).

    Runs on ``deconflow.threads.NUMERICAL_THREADS`` threads: the same bytes on any machine.
    """
    from .io import read_mixtures
    from .models import load_model

    model = load_model(model_path)
    test = read_mixtures(test_path, expect_normalization=normalization)
    features = features_for_model(test, model)
    if "coverage" in test.extra:  # methylation: reads per region, as real samples have them
        predicted = model.predict_with_coverage(features, features_for_model(test, model, test.extra["coverage"]))
    else:
        predicted = model.predict(features)
    summary = long_table(test.proportions, predicted, test.sample_ids, test.cell_types)
    metrics = compute_metrics(test.proportions, predicted, test.cell_types, presence_threshold)
    metrics["model"] = model.name
    if spiked_entries(test.proportions).any():  # methylation test sets carry spike-in mixtures
        metrics["detection_limit"] = detection_limit_table(test.proportions, predicted, presence_threshold=presence_threshold).to_dict("records")
    return summary, metrics
