"""Score a peer's proportions of the held-out test mixtures (the models' evaluation, same metrics)."""

from deconflow.evaluation import compute_metrics, long_table
from deconflow.io import read_library_size, read_mixtures, write_json, write_table
from deconflow.logs import script_logging
from deconflow.peers import read_raw_output, to_cell_fractions

with script_logging(snakemake.log[0]) as log:
    peer = snakemake.wildcards.model
    test = read_mixtures(snakemake.input.test, expect_normalization="cpm")
    library_size = read_library_size(snakemake.input.library_size, test.cell_types).to_numpy()
    raw = read_raw_output(snakemake.input.raw)
    if "Unknown" in raw.columns:
        log.info("%s: mean Unknown share %.3f (dropped, rows renormalised)", peer, raw["Unknown"].mean())
    predicted = to_cell_fractions(raw, peer, test.cell_types, library_size, source=snakemake.input.raw)
    predicted = predicted.loc[[str(s) for s in test.sample_ids]].to_numpy()
    summary = long_table(test.proportions, predicted, test.sample_ids, test.cell_types)
    metrics = {**compute_metrics(test.proportions, predicted, test.cell_types, snakemake.params.presence_threshold),
               "model": peer, "kind": "peer"}
    write_table(summary, snakemake.output.summary, index=False)
    write_json(metrics, snakemake.output.metrics)
    log.info("%s (peer): mean r %.3f, CCC %.3f, MAE %.4f, spurious rate %.3f",
             peer, metrics["mean_r"], metrics["ccc"], metrics["mae"], metrics["spurious_rate"])
