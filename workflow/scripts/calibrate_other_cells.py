"""Calibrate the fraction of cells of no reference type on held-out-type validation mixtures
(deconflow.other_cells)."""

from deconflow.logs import script_logging
from deconflow.other_cells import calibrate_file

with script_logging(snakemake.log[0]) as log:
    params = snakemake.params.settings
    calibration = calibrate_file(
        snakemake.input.reference, snakemake.input.cells, snakemake.input.signature, snakemake.output.calibration,
        reader=snakemake.params.reader, settings=params["settings"], linear_fit=params["linear_fit"],
        interval_settings=params["intervals"], mixture_settings=params["mixtures"], seed=snakemake.params.seed,
    )
    mae = sum(v["mae"] for v in calibration["validation"].values()) / len(calibration["validation"])
    log.info("other cells: %d held-out-type validation mixtures, mean MAE %.3f over the held-out types",
             len(calibration["scores"]), mae)
