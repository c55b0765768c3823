"""Glue for rule train_model: train one learned model (hpvade, scaden, sparse) on a dataset."""

from deconflow.logs import script_logging
from deconflow.training import train_from_files

with script_logging(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    train_from_files(
        model_name=snakemake.wildcards.model,  # noqa: F821
        train_path=snakemake.input.train,  # noqa: F821
        val_path=snakemake.input.val,  # noqa: F821
        signature_path=snakemake.input.signature,  # noqa: F821
        reference_path=getattr(snakemake.input, "reference", None),  # noqa: F821 (absent for methylation)
        split_path=getattr(snakemake.input, "split", None),  # noqa: F821
        dataset=dict(snakemake.params.dataset),  # noqa: F821
        settings=dict(snakemake.params.settings),  # noqa: F821
        seed=int(snakemake.params.seed),  # noqa: F821
        outputs={
            "best": snakemake.output.best,  # noqa: F821
            "last": snakemake.output.last,  # noqa: F821
            "history": snakemake.output.history,  # noqa: F821
            "tensorboard_dir": getattr(snakemake.params, "tensorboard_dir", None),  # noqa: F821
        },
    )
