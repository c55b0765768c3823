"""Fit a non-learned baseline (NNLS): its checkpoint holds the signature."""

from deconflow.cell_content import reference_cell_size
from deconflow.io import file_checksum, read_mixtures, read_signature
from deconflow.logs import script_logging
from deconflow.models import module_for, save_checkpoint

with script_logging(snakemake.log[0]) as log:
    model_name = snakemake.wildcards.model
    train = read_mixtures(snakemake.input.train, expect_normalization=None)
    signature = read_signature(snakemake.input.signature)
    model = module_for(model_name).fit(train, None, signature, dict(snakemake.params.settings))
    provenance = {
        "inputs": {name: file_checksum(path) for name, path in snakemake.input.items() if name in ("signature", "library_size") and path},
        "settings": dict(snakemake.params.settings),
        "reference_cell_size": reference_cell_size(signature),  # for a bulk's `cell_mrna`
    }
    save_checkpoint(model.checkpoint(provenance), snakemake.output.best)
    log.info("%s fitted: %d features x %d cell types", model_name, len(model.feature_names), len(model.cell_types))
