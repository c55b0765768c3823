# Real bulk with measured fractions (`truth`): each model's proportions scored against them over
# the `truth_groups`, then one side-by-side table per bulk (plots: plot_bulk_model in plots.smk).


rule evaluate_bulk:
    input:
        unpack(bulk_intervals_input),
        proportions="results/{dataset}/deconvolution/{bulk}/{model}/proportions.csv",
        truth=truth_file,
        code=library_files("evaluation", "truth") + TRUST_CODE,
    output:
        summary="results/{dataset}/bulk_evaluation/{bulk}/{model}/summary_stats.csv",
        metrics="results/{dataset}/bulk_evaluation/{bulk}/{model}/metrics.json",
    log:
        "logs/{dataset}/evaluate_bulk/{bulk}/{model}.log",
    wildcard_constraints:
        bulk=alternatives(BULKS_WITH_TRUTH),
    conda:
        "../../envs/deconflow.yaml"
    params:
        truth=truth_settings,
        presence_threshold=config["evaluation"]["presence_threshold"],
    script:
        "../scripts/evaluate_bulk.py"


rule compare_bulk_models:
    input:
        metrics=bulk_comparison_inputs,
        code=library_files("evaluation"),
    output:
        comparison=report(
            "results/{dataset}/bulk_evaluation/{bulk}/comparison.csv",
            caption="../report/bulk_comparison.rst",
            category="{dataset}: real bulk {bulk}",
            labels={"table": "model comparison on real bulk"},
        ),
    log:
        "logs/{dataset}/compare_bulk_models/{bulk}.log",
    wildcard_constraints:
        bulk=alternatives(BULKS_WITH_TRUTH),
    conda:
        "../../envs/deconflow.yaml"
    params:
        models=comparison_models,
        kinds=comparison_kinds,
    script:
        "../scripts/compare_models.py"
