"""Extract the Loyfer et al. (2023) atlas (7,693 regions x 39 cell types) from the nanomix wheel."""

from deconflow.logs import script_logging
from deconflow.methylation import convert_nanomix_wheel

with script_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    summary = convert_nanomix_wheel(snakemake.input.wheel, snakemake.output.atlas)  # noqa: F821
    log.info("atlas: %d regions x %d cell types from %s. Cite: %s",
             summary["n_regions"], summary["n_cell_types"], summary["source"], summary["citation"])
