"""Train-pool cells (raw counts) for the peers that build their own signature, on the genes the
reference shares with every bulk of the dataset (so one signature serves every sample), at most
`peer_max_cells_per_type` cells of each type (seeded, stratified), read and written a chunk of
cells at a time (deconflow.peers.write_train_pool_reference)."""

import anndata as ad
import numpy as np

from deconflow.io import open_reference
from deconflow.logs import script_logging
from deconflow.peers import write_train_pool_reference
from deconflow.split import read_split

with script_logging(snakemake.log[0]) as log:
    reader = snakemake.params.reader
    reference = open_reference(snakemake.input.reference, reader["label_key"], reader["counts_layer"], reader["donor_key"],
                               labels=reader["labels"], gene_column=reader["gene_column"])
    train = np.flatnonzero(read_split(snakemake.input.cells, reference.cell_ids) == "train")
    keep = np.ones(len(reference.genes), dtype=bool)
    for path in snakemake.input.bulks:
        keep &= np.isin(reference.genes, ad.read_h5ad(path, backed="r").var_names)
    cap, seed = snakemake.params.max_cells_per_type, snakemake.params.seed
    kept = write_train_pool_reference(reference, train, keep, snakemake.output.reference, cap, seed)
    for cell_type in reference.cell_types:
        n, of = kept["kept"][cell_type], kept["available"][cell_type]
        log.info("%s: %d of %d train-pool cells%s", cell_type, n, of, " (capped)" if n < of else "")
    log.info("%d of %d train-pool cells (peer_max_cells_per_type %s, seed %d) x %d genes (shared with %d bulks), "
             "%d non-zeros, written for the peers", kept["cells"], len(train), cap, seed, kept["genes"],
             len(snakemake.input.bulks), kept["nnz"])
