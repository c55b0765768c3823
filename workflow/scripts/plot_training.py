"""Training curves of one learned model from its training_log.csv."""

from deconflow.logs import script_logging
from deconflow.plots import read_training_log, training_curves_plot

with script_logging(snakemake.log[0]) as log:
    history = read_training_log(snakemake.input.history)
    training_curves_plot(history, snakemake.output.curves, title=snakemake.params.title, source=snakemake.input.history)
    log.info("wrote %s (%d epochs)", snakemake.output.curves, len(history))
