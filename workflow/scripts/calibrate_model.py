"""Calibrate a model's per-sample intervals on the validation mixtures (deconflow.trust)."""

from deconflow.logs import script_logging
from deconflow.trust import calibrate_file

with script_logging(snakemake.log[0]) as log:
    calibration = calibrate_file(snakemake.input.model, snakemake.input.val, snakemake.output.calibration,
                                 snakemake.params.settings, snakemake.params.seed)
    log.info("%s: calibrated on %d validation mixtures (%d gene-masked replicates, %.0f %% of genes hidden each)",
             snakemake.wildcards.model, calibration["n_validation"], calibration["replicates"],
             100 * calibration["gene_drop_fraction"])
