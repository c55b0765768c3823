"""Deconvolve the dataset's real bulk samples (same code as `deconflow deconvolve`)."""

from deconflow.deconvolve import deconvolve_file
from deconflow.logs import script_logging

with script_logging(snakemake.log[0]) as log:
    table = deconvolve_file(
        snakemake.input.model, snakemake.input.bulk, snakemake.output.proportions, snakemake.params.min_overlap
    )
    log.info("proportions:\n%s", table.round(3).to_string())
