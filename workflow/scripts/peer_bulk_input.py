"""A real bulk as the peers read it: genes matched to the reference's (as for the models), h5ad
samples x shared genes, CPM over them. Only the reference's metadata is read (its genes; the
counts stay on disk: open_reference), whatever its size."""

from deconflow.io import open_reference
from deconflow.logs import script_logging
from deconflow.peers import match_bulk_to_reference, write_peer_bulk

with script_logging(snakemake.log[0]) as log:
    inputs, reader, settings = snakemake.input, snakemake.params.reader, dict(snakemake.params.bulk)
    reference = open_reference(inputs.reference, reader["label_key"], reader["counts_layer"], reader["donor_key"],
                               labels=reader["labels"], gene_column=reader["gene_column"])
    bulk = [inputs.bulk] if isinstance(inputs.bulk, str) else list(inputs.bulk)
    matched = match_bulk_to_reference(
        bulk if len(bulk) > 1 else bulk[0], reference.genes, snakemake.params.min_overlap,
        bulk_format=settings["bulk_format"], quantity=settings["quantity"], gene_table=inputs.get("gene_table"),
        reference=inputs.reference, gene_column=settings["gene_column"], counts_layer=settings["counts_layer"],
        tx2gene=inputs.get("tx2gene"),
    )
    write_peer_bulk(matched.to_numpy().T, matched.columns, matched.index, snakemake.output.bulk)
    log.info("%d samples x %d reference genes written for the peers", matched.shape[1], matched.shape[0])
