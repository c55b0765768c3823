"""Untar the DAISM-DNN calibration samples (bulk + flow-cytometry fractions) from the daism sdist."""

from deconflow.io.data import convert_daism_sdist
from deconflow.logs import script_logging

with script_logging(snakemake.log[0]) as log:
    summary = convert_daism_sdist(snakemake.input.sdist, snakemake.output.bulk, snakemake.output.truth)
    log.info("converted the DAISM-DNN calibration samples: %s", summary)
