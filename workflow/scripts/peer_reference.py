"""Train-pool cells (raw counts) for the peers that build their own signature, on the genes the
reference shares with every bulk of the dataset (so one signature serves every sample)."""

import anndata as ad
import numpy as np

from deconflow.io import read_reference
from deconflow.logs import script_logging
from deconflow.peers import write_peer_reference
from deconflow.split import read_split

with script_logging(snakemake.log[0]) as log:
    reader = snakemake.params.reader
    reference = read_reference(snakemake.input.reference, reader["label_key"], reader["counts_layer"], reader["donor_key"],
                               labels=reader["labels"], gene_column=reader["gene_column"])
    train = read_split(snakemake.input.cells, reference.cell_ids) == "train"
    keep = np.ones(len(reference.genes), dtype=bool)
    for path in snakemake.input.bulks:
        keep &= np.isin(reference.genes, ad.read_h5ad(path, backed="r").var_names)
    write_peer_reference(reference.counts[train][:, keep], reference.labels[train], reference.genes[keep],
                         reference.cell_ids[train], reference.cell_types, snakemake.output.reference)
    log.info("%d train-pool cells x %d genes (shared with %d bulks) written for the peers", int(train.sum()),
             int(keep.sum()), len(snakemake.input.bulks))
