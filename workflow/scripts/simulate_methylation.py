"""cfDNA-like methylation mixtures for one split (same HDF5 layout as the RNA pseudobulk)."""

import time

from deconflow.logs import script_logging
from deconflow.methylation import MethylationSimSettings, read_atlas, simulate_methylation, split_simulation_settings, write_methylation_mixtures

with script_logging(snakemake.log[0]) as log:  # noqa: F821 (snakemake is injected)
    split = snakemake.wildcards.split  # noqa: F821
    params = snakemake.params.simulation  # noqa: F821
    seed = int(snakemake.params.seed)  # noqa: F821
    atlas = read_atlas(snakemake.input.atlas)  # noqa: F821
    settings = split_simulation_settings(
        MethylationSimSettings.from_dict(params["settings"]), split, {split: params["n_mixtures"]}, params["spike_fraction_test"]
    )
    start = time.perf_counter()
    simulation = simulate_methylation(atlas, settings, seed)
    write_methylation_mixtures(snakemake.output.mixtures, atlas, simulation, settings, seed, split, source=snakemake.input.atlas)  # noqa: F821
    log.info("%s: %d mixtures x %d regions in %.1f s; %.2f %% of regions without reads (%s); %d spike-ins",
             split, settings.n_mixtures, atlas.shape[0], time.perf_counter() - start,
             100 * float((simulation["coverage"] == 0).mean()), settings.zero_coverage, int((simulation["spike_level"] > 0).sum()))
