# Evaluation on held-out test mixtures, per model, then one side-by-side table.


rule evaluate_model:
    input:
        model=CHECKPOINT,
        test=mixture_file("test"),
        code=EVALUATION_CODE,
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
