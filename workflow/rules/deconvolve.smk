# Deconvolution of the dataset's real bulk samples with each fitted model, one job per named bulk:
# proportions, calibrated intervals and one quality row per sample (deconflow.trust).


def adaptation_inputs(wildcards):
    """The training mixtures a model with an adaptation step (hpvade) is adapted to the bulk with
    (`deconvolution.adapt`, RNA only; deconflow.models.adaptation)."""
    if (
        modality(wildcards) == "rna"
        and adaptation_settings(wildcards)["enabled"]
        and wildcards.model in ADAPTS_TO_BULK
    ):
        return {"mixtures": f"results/{wildcards.dataset}/pseudobulk/train.h5"}
    return {}


def adaptation_settings(wildcards):
    section = config.get("deconvolution", {})
    return {
        "enabled": bool(section.get("adapt", True)),
        "min_samples": int(section.get("adapt_min_samples", 3)),
    }


rule deconvolve_bulk:
    input:
        unpack(deconvolution_inputs),
        unpack(calibration_inputs),
        unpack(adaptation_inputs),
        model=CHECKPOINT,
        bulk=bulk_file,
        code=DECONVOLUTION_CODE + TRUST_CODE,
    output:
        proportions="results/{dataset}/deconvolution/{bulk}/{model}/proportions.csv",
        intervals="results/{dataset}/deconvolution/{bulk}/{model}/intervals.csv",
        qc=report(
            "results/{dataset}/deconvolution/{bulk}/{model}/qc.csv",
            caption="../report/qc.rst",
            category="{dataset}: real bulk {bulk}",
            subcategory="{model}",
            labels={"table": "quality per sample"},
        ),
    log:
        "logs/{dataset}/deconvolve_bulk/{bulk}/{model}.log",
    benchmark:
        "benchmarks/{dataset}/deconvolve_bulk/{bulk}/{model}.tsv"
    wildcard_constraints:
        model=alternatives(MODELS),
    conda:
        "../../envs/deconflow.yaml"
    params:
        min_overlap=config["deconvolution"]["min_feature_overlap"],
        bulk=bulk_settings,
        level=interval_level,
        qc=qc_settings,
        adapt=adaptation_settings,
    script:
        "../scripts/deconvolve_bulk.py"
