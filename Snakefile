# deconflow: cell-type / tissue deconvolution of bulk RNA-seq and cfDNA methylation.
# This file is the table of contents; every stage lives in workflow/rules/<stage>.smk.
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from deconflow.config import add_cohorts, check_config, check_config_text

min_version("9.0")


# A --configfile on the command line replaces the default config instead of being merged into
# it (keys it leaves out take the schema's defaults). Unlike --replace-workflow-config this also
# holds inside cluster jobs, which re-run snakemake with the same --configfile.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# What the schema cannot see, before it: names YAML 1.1 read as booleans (a bulk named `on`) and
# the `train` section against the trainer's and each learned model's settings.
check_config_text(config, workflow.configfiles, workflow.config_settings.config)

# `--config cohorts_dir=FOLDER` adds the real cohorts of config/cohorts.yaml (read from FOLDER,
# never copied into the repository) to their datasets before validation.
config.update(add_cohorts(config))


# validate() fills in the schema's defaults. When it fails, check_config explains the violation
# in one line naming the config file, the key and the fix (snakemake's message names neither);
# the schema is checked only once on the way to a valid config.
try:
    validate(config, "workflow/schemas/config.schema.yaml")
except WorkflowError:
    check_config(
        config,
        f"{workflow.basedir}/workflow/schemas/config.schema.yaml",
        workflow.configfiles,
        workflow.config_settings.config,
    )
    raise


include: "workflow/rules/common.smk"
include: "workflow/rules/reference.smk"
include: "workflow/rules/pseudobulk.smk"
include: "workflow/rules/methylation.smk"
include: "workflow/rules/signature.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/deconvolve.smk"
include: "workflow/rules/peers.smk"
include: "workflow/rules/bulk_evaluation.smk"


rule all:
    default_target: True
    input:
        all_outputs,
