"""Assign every reference cell to train / val / test (labels only: the counts stay on disk)."""

import pandas as pd

from deconflow.io import open_reference, write_table
from deconflow.logs import script_logging
from deconflow.split import split_cells

with script_logging(snakemake.log[0]) as log:
    reader = snakemake.params.reader
    # validated like every reader of the reference (raw counts checked chunk by chunk)
    reference = open_reference(
        snakemake.input.reference, reader["label_key"], reader["counts_layer"], reader["donor_key"],
        labels=reader["labels"], gene_column=reader["gene_column"],
    )
    fractions = snakemake.params.fractions
    splits = split_cells(
        reference.labels,
        {k: fractions[k] for k in ("train", "val", "test")},
        seed=snakemake.params.seed,
        donors=reference.donors,
        min_cells_per_split=fractions.get("min_cells_per_split", 1),
        source=snakemake.input.reference,
    )
    table = pd.DataFrame({"cell_id": reference.cell_ids, "cell_type": reference.labels, "split": splits})
    if reference.donors is not None:
        table["donor"] = reference.donors
    write_table(table, snakemake.output.cells, index=False)
    log.info("split %d cells: %s", len(table), table["split"].value_counts().to_dict())
