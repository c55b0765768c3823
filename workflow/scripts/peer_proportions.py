"""A peer's raw output of a real bulk -> proportions.csv in deconflow's format (cell fractions)."""

import pandas as pd

from deconflow.cell_content import read_cell_mrna
from deconflow.io import read_library_size, write_table
from deconflow.logs import script_logging
from deconflow.peers import read_raw_output, to_cell_fractions

with script_logging(snakemake.log[0]) as log:
    peer, inputs = snakemake.wildcards.model, snakemake.input
    # the reference's cell types in the models' order (build_signature writes them in that order)
    cell_types = pd.read_csv(inputs.library_size, sep="\t", index_col=0).index.astype(str).tolist()
    library_size = read_library_size(inputs.library_size, cell_types).to_numpy()
    raw = read_raw_output(inputs.raw)
    if "Unknown" in raw.columns:
        log.info("%s: Unknown share per sample (dropped, rows renormalised):\n%s", peer, raw["Unknown"].round(3).to_string())
    content = read_cell_mrna(inputs.cell_mrna, cell_types) if inputs.get("cell_mrna") else None
    table = to_cell_fractions(raw, peer, cell_types, library_size, content, source=inputs.raw)
    write_table(table, snakemake.output.proportions)
    log.info("proportions (%s, peer):\n%s", peer, table.round(3).to_string())
