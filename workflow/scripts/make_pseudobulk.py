"""CPM pseudobulk mixtures for one split."""

import time

from deconflow.io import open_reference
from deconflow.logs import script_logging
from deconflow.pseudobulk import MixtureSettings, pseudobulk_for_split
from deconflow.split import read_split

with script_logging(snakemake.log[0]) as log:
    reader = snakemake.params.reader
    reference = open_reference(
        snakemake.input.reference, reader["label_key"], reader["counts_layer"], reader["donor_key"],
        labels=reader["labels"], gene_column=reader["gene_column"],
    )
    splits = read_split(snakemake.input.cells, reference.cell_ids)
    settings = MixtureSettings(**snakemake.params.settings)
    start = time.perf_counter()
    summary = pseudobulk_for_split(
        reference, splits, snakemake.wildcards.split, settings, snakemake.params.seed, snakemake.output.mixtures
    )
    seconds = time.perf_counter() - start
    log.info("%s; %.2f s, %.0f mixtures/s (CPM, no log transform)", summary, seconds, summary["n_mixtures"] / seconds)
