# Calibration of every model on the validation mixtures (RNA: intervals and residuals; methylation:
# the residuals of qc.csv), evaluation on held-out
# test mixtures (accuracy and interval coverage) per model, then one side-by-side table.


rule calibrate_model:
    input:
        model=CHECKPOINT,
        val=mixture_file("val"),
        code=EVALUATION_CODE + TRUST_CODE,
    output:
        calibration=CALIBRATION,
    log:
        "logs/{dataset}/calibrate_model/{model}.log",
    benchmark:
        "benchmarks/{dataset}/calibrate_model/{model}.tsv"
    conda:
        "../../envs/deconflow.yaml"
    params:
        settings=calibration_settings,
        seed=config["seed"],
    script:
        "../scripts/calibrate_model.py"


rule evaluate_model:
    input:
        unpack(calibration_inputs),
        model=CHECKPOINT,
        test=mixture_file("test"),
        code=EVALUATION_CODE + TRUST_CODE,
    output:
        summary="results/{dataset}/evaluation/{model}/summary_stats.csv",
        metrics="results/{dataset}/evaluation/{model}/metrics.json",
    log:
        "logs/{dataset}/evaluate_model/{model}.log",
    benchmark:
        "benchmarks/{dataset}/evaluate_model/{model}.tsv"
    wildcard_constraints:
        model=alternatives(MODELS),
    conda:
        "../../envs/deconflow.yaml"
    params:
        presence_threshold=config["evaluation"]["presence_threshold"],
        modality=modality,
        level=interval_level,
    script:
        "../scripts/evaluate_model.py"


rule compare_models:
    input:
        metrics=comparison_inputs,
        code=library_files("evaluation"),
    output:
        comparison=report(
            "results/{dataset}/evaluation/comparison.csv",
            caption="../report/comparison.rst",
            category="{dataset}",
            labels={"table": "model comparison"},
        ),
    log:
        "logs/{dataset}/compare_models.log",
    conda:
        "../../envs/deconflow.yaml"
    params:
        models=comparison_models,
        kinds=comparison_kinds,
    script:
        "../scripts/compare_models.py"
