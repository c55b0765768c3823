"""One row per model (and peer) with the same metrics, so every run compares them side by side."""

import json

from deconflow.evaluation import comparison_table
from deconflow.io import write_table
from deconflow.logs import script_logging

with script_logging(snakemake.log[0]) as log:
    metrics = {}
    for model, path in zip(snakemake.params.models, snakemake.input.metrics):
        with open(path) as fh:
            metrics[model] = json.load(fh)
    table = comparison_table(metrics, dict(zip(snakemake.params.models, snakemake.params.kinds)))
    write_table(table, snakemake.output.comparison, index=False)
    log.info("model comparison:\n%s", table.to_string(index=False))
