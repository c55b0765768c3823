"""Deconvolve the dataset's real bulk samples, with intervals and quality rows (same code as
`deconflow deconvolve --intervals --qc`)."""

from deconflow.deconvolve import deconvolve_file
from deconflow.logs import script_logging

with script_logging(snakemake.log[0]) as log:
    inputs = snakemake.input
    bulk = [inputs.bulk] if isinstance(inputs.bulk, str) else list(inputs.bulk)
    settings = dict(snakemake.params.bulk)  # format (both modalities), quantity and gene columns (RNA)
    if "reference" in inputs.keys():  # RNA: the reference's own gene IDs, the gene table, tx2gene
        settings.update(reference=inputs.reference, gene_table=inputs.get("gene_table"), tx2gene=inputs.get("tx2gene"))
    settings["cell_mrna"] = inputs.get("cell_mrna") or None  # the bulk's mRNA per cell (RNA; refused for methylation)
    table = deconvolve_file(
        inputs.model, bulk if len(bulk) > 1 else bulk[0], snakemake.output.proportions, snakemake.params.min_overlap,
        intervals=snakemake.params.level, qc=True, calibration=inputs.get("calibration") or None,
        other_cells=inputs.get("other_cells") or None, absolute=snakemake.params.absolute,
        adapt=dict(snakemake.params.adapt), mixtures=inputs.get("mixtures") or None,
        methylation_evidence=dict(snakemake.params.methylation_evidence), **snakemake.params.qc, **settings,
    )
    log.info("proportions:\n%s", table.round(3).to_string())
