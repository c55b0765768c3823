"""Predict the held-out test mixtures and score them (and the calibrated intervals, RNA models)."""

from deconflow.evaluation import evaluate_checkpoint
from deconflow.io import write_json, write_table
from deconflow.logs import script_logging
from deconflow.trust import evaluate_intervals_file

NORMALIZATION = {"rna": "cpm", "methylation": "beta"}

with script_logging(snakemake.log[0]) as log:
    summary, metrics = evaluate_checkpoint(
        snakemake.input.model,
        snakemake.input.test,
        NORMALIZATION[snakemake.params.modality],
        snakemake.params.presence_threshold,
    )
    if "calibration" in snakemake.input.keys():
        metrics.update(evaluate_intervals_file(snakemake.input.model, snakemake.input.test, snakemake.input.calibration,
                                               snakemake.params.level))
        log.info("intervals at %.2f: coverage %.3f, mean width %.4f", metrics["interval_level"],
                 metrics["interval_coverage"], metrics["interval_mean_width"])
    write_table(summary, snakemake.output.summary, index=False)
    write_json(metrics, snakemake.output.metrics)
    log.info("%s: mean r %.3f, CCC %.3f, MAE %.4f, spurious rate %.3f",
             snakemake.wildcards.model, metrics["mean_r"], metrics["ccc"], metrics["mae"], metrics["spurious_rate"])
