# Figures per model: Miami plot (true above the axis, predicted mirrored below) and scatter.


rule plot_model:
    input:
        summary="results/{dataset}/evaluation/{model}/summary_stats.csv",
        code=library_files("plots"),
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
        title="{dataset} / {model}",
    script:
        "../scripts/plot_model.py"
