"""The held-out test mixtures as the peers read them (h5ad, samples x genes, CPM)."""

from deconflow.io import read_mixtures
from deconflow.logs import script_logging
from deconflow.peers import write_peer_bulk

with script_logging(snakemake.log[0]) as log:
    test = read_mixtures(snakemake.input.test, expect_normalization="cpm")
    write_peer_bulk(test.features, test.sample_ids, test.feature_names, snakemake.output.bulk)
    log.info("%d test mixtures x %d genes written for the peers", len(test.sample_ids), len(test.feature_names))
