"""deconflow: cell-type / tissue deconvolution of bulk RNA-seq and cfDNA methylation.

The library behind the Snakemake workflow. It never imports snakemake: every stage is a
plain function over arrays, AnnData objects or paths, so it can be tested with pytest and
used from the CLI or a notebook.
"""

__version__ = "0.1.0"
