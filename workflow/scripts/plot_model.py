"""Miami and scatter plots of one model's predictions (test mixtures, or a real bulk against its
truth: intervals as error bars, samples flagged in qc.csv marked)."""

import pandas as pd

from deconflow.logs import script_logging
from deconflow.plots import flagged_samples, miami_plot, read_summary, scatter_plot

with script_logging(snakemake.log[0]) as log:
    summary = read_summary(snakemake.input.summary)
    qc = pd.read_csv(snakemake.input.qc, dtype={"sample_id": str, "flag": str}) if "qc" in snakemake.input.keys() else None
    miami_plot(summary, snakemake.output.miami, n_samples=snakemake.params.n_samples, title=snakemake.params.title,
               flagged=flagged_samples(qc))
    scatter_plot(summary, snakemake.output.scatter, title=snakemake.params.title)
    log.info("wrote %s and %s", snakemake.output.miami, snakemake.output.scatter)
