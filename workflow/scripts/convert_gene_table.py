"""Unzip the GENCODE v22 gene list of the pybayesprism wheel into a gene table (ensembl_id, symbol)."""

from deconflow.io.data import convert_gene_table_wheel
from deconflow.logs import script_logging

with script_logging(snakemake.log[0]) as log:
    summary = convert_gene_table_wheel(snakemake.input.wheel, snakemake.output.table)
    log.info("converted the embedded GENCODE v22 gene table: %s", summary)
