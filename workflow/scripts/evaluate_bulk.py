"""Score one model's proportions (and intervals) of a real bulk against its measured fractions (truth)."""

from deconflow.io import write_json, write_table
from deconflow.logs import script_logging
from deconflow.truth import evaluate_bulk_file

with script_logging(snakemake.log[0]) as log:
    truth = snakemake.params.truth
    summary, metrics = evaluate_bulk_file(
        snakemake.input.proportions, snakemake.input.truth, truth["truth_groups"], truth["bulk_path"], truth["key"],
        snakemake.params.presence_threshold, intervals_path=snakemake.input.get("intervals"),
    )
    write_table(summary, snakemake.output.summary, index=False)
    write_json(metrics, snakemake.output.metrics)
    log.info("%s on %s: mean group r %.3f, CCC %.3f, MAE %.4f (unrenormalised %.4f); intervals cover %.3f of (sample, group) "
             "pairs, mean width %.4f (NaN: no intervals)", snakemake.wildcards.model, snakemake.wildcards.bulk, metrics["mean_r"],
             metrics["ccc"], metrics["mae"], metrics["mae_unrenormalised"], metrics.get("interval_coverage", float("nan")),
             metrics.get("interval_mean_width", float("nan")))
