"""The signature of a methylation dataset is its atlas (regions x cell types betas), validated."""

from deconflow.io import write_table
from deconflow.logs import script_logging
from deconflow.methylation import atlas_from_counts, read_atlas

with script_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    inputs = snakemake.input  # noqa: F821
    if hasattr(inputs, "methylated"):
        atlas, summary = atlas_from_counts(inputs.methylated, inputs.total, snakemake.params.min_coverage)  # noqa: F821
        log.info("atlas from read counts: %s", summary)
    else:
        atlas = read_atlas(inputs.atlas)
    write_table(atlas, snakemake.output.signature, float_format="%.6g")  # noqa: F821
    log.info("signature = atlas: %d regions x %d cell types (betas)", *atlas.shape)
