"""The model registry, importable without numpy/pandas/torch.

The Snakefile reads it at parse time (which names are models, which are learned); keeping it
free of heavy imports keeps ``snakemake -n`` fast (importing ``deconflow.models`` costs ~1 s).
"""

#: name -> (module, learned?). Adding a model = one line here + its module in deconflow.models.
#: Learned models are trained by the GPU rule ``train_model``; the others by ``fit_baseline``.
MODULES: dict[str, tuple[str, bool]] = {
    "nnls": ("deconflow.models.nnls", False),
    "hpvade": ("deconflow.models.hpvade", True),
    "scaden": ("deconflow.models.scaden", True),
    "sparse": ("deconflow.models.sparse", True),
    "nnls_reads": ("deconflow.models.nnls_reads", False),
}

#: Models whose fit uses the ``linear_fit`` config section (NNLS itself, HP-VADE's NNLS prior):
#: only these rerun when it changes.
USES_LINEAR_FIT: frozenset[str] = frozenset({"nnls", "hpvade"})

#: Models whose fit uses the ``methylation_evidence`` config section (methylation read counts).
USES_READ_FIT: frozenset[str] = frozenset({"nnls_reads"})

#: Models with an adaptation step at deconvolution time (``FittedModel.adapted``,
#: ``deconflow.models.adaptation``): their ``deconvolve_bulk`` jobs read the training mixtures.
ADAPTS_TO_BULK: frozenset[str] = frozenset({"hpvade"})
