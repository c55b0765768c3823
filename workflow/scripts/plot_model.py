"""Miami and scatter plots of one model's predictions (test mixtures, or a real bulk against its truth)."""

from deconflow.logs import script_logging
from deconflow.plots import miami_plot, read_summary, scatter_plot

with script_logging(snakemake.log[0]) as log:
    summary = read_summary(snakemake.input.summary)
    miami_plot(summary, snakemake.output.miami, n_samples=snakemake.params.n_samples, title=snakemake.params.title)
    scatter_plot(summary, snakemake.output.scatter, title=snakemake.params.title)
    log.info("wrote %s and %s", snakemake.output.miami, snakemake.output.scatter)
