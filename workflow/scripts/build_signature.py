"""Signature matrix from the train pool: per-cell-type mean CPM (the reference read a chunk at a time)."""

import numpy as np

from deconflow.io import open_reference, write_table
from deconflow.logs import script_logging
from deconflow.signature import cell_type_means_chunked, library_size_from_totals, select_marker_genes
from deconflow.split import read_split

with script_logging(snakemake.log[0]) as log:
    reader = snakemake.params.reader
    reference = open_reference(
        snakemake.input.reference, reader["label_key"], reader["counts_layer"], reader["donor_key"],
        labels=reader["labels"], gene_column=reader["gene_column"],
    )
    train = np.flatnonzero(read_split(snakemake.input.cells, reference.cell_ids) == "train")
    signature, totals, detection = cell_type_means_chunked(
        reference.chunks(train), reference.labels[train], reference.genes, reference.cell_types, detection=True
    )
    log.info("signature initialised from cell-type mean CPM (%d genes x %d cell types, %d train cells)",
             *signature.shape, len(train))
    n_markers = snakemake.params.marker_genes_per_type
    if n_markers:
        signature = select_marker_genes(signature, int(n_markers))
        log.info("kept %d marker genes (%d per cell type requested)", len(signature), n_markers)
    write_table(signature, snakemake.output.signature)
    write_table(detection.loc[signature.index], snakemake.output.detection)  # for sibling_types (linear fit)
    library_size = library_size_from_totals(totals, reference.labels[train], reference.cell_types)
    log.info("mean library size per cell type (UMIs per cell, train pool):\n%s", library_size.round(1).to_string())
    write_table(library_size.to_frame(), snakemake.output.library_size)
