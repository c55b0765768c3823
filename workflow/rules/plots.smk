# Figures per model: Miami plot (true above the axis, predicted mirrored below) and scatter;
# the same two for each model on each real bulk with measured fractions; training curves per
# learned model.


rule plot_model:
    input:
        summary="results/{dataset}/evaluation/{model}/summary_stats.csv",
        code=library_files("evaluation", "plots"),
    output:
        miami=report(
            "results/{dataset}/plots/{model}/miami.png",
            caption="../report/miami.rst",
            category="{dataset}",
            subcategory="{model}",
        ),
        scatter=report(
            "results/{dataset}/plots/{model}/scatter.png",
            caption="../report/scatter.rst",
            category="{dataset}",
            subcategory="{model}",
        ),
    log:
        "logs/{dataset}/plot_model/{model}.log",
    conda:
        "../../envs/deconflow.yaml"
    params:
        n_samples=config["evaluation"]["miami_samples"],
        title=plot_title,
    script:
        "../scripts/plot_model.py"


rule plot_bulk_model:
    input:
        unpack(bulk_qc_input),
        summary="results/{dataset}/bulk_evaluation/{bulk}/{model}/summary_stats.csv",
        code=library_files("plots"),
    output:
        miami=report(
            "results/{dataset}/plots/bulk_{bulk}/{model}/miami.png",
            caption="../report/bulk_miami.rst",
            category="{dataset}: real bulk {bulk}",
            subcategory="{model}",
        ),
        scatter=report(
            "results/{dataset}/plots/bulk_{bulk}/{model}/scatter.png",
            caption="../report/bulk_scatter.rst",
            category="{dataset}: real bulk {bulk}",
            subcategory="{model}",
        ),
    log:
        "logs/{dataset}/plot_bulk_model/{bulk}/{model}.log",
    wildcard_constraints:
        bulk=alternatives(BULKS_WITH_TRUTH),
    conda:
        "../../envs/deconflow.yaml"
    params:
        n_samples=config["evaluation"]["miami_samples"],
        title=plot_title,
    script:
        "../scripts/plot_model.py"


rule plot_training:
    input:
        history="results/{dataset}/models/{model}/training_log.csv",
        code=library_files("evaluation", "plots"),
    output:
        curves=report(
            "results/{dataset}/plots/{model}/training_curves.png",
            caption="../report/training_curves.rst",
            category="{dataset}",
            subcategory="{model}",
        ),
    log:
        "logs/{dataset}/plot_training/{model}.log",
    wildcard_constraints:
        model=alternatives(LEARNED_MODELS),
    conda:
        "../../envs/deconflow.yaml"
    params:
        title="{dataset} / {model}",
    script:
        "../scripts/plot_training.py"
