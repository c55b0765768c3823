# Model fitting: baselines (NNLS) on CPU, learned models on a GPU when there is one.
# What the learned model is for: HP-VADE beats NNLS on pseudobulk of the reference's protocol
# (held-out r 0.96 vs 0.89); on real bulk it answers only after deconvolve_bulk adapts it to the
# bulk's own samples, and there it matches NNLS's CCC with better per-group r (docs/real-bulk.md).


rule fit_baseline:
    input:
        train=mixture_file("train"),
        signature="results/{dataset}/signature/signature.tsv",
        library_size=library_size_file,
        detection=detection_file,
        code=MODEL_CODE + library_files("cell_content"),
    output:
        best="results/{dataset}/models/{model}/checkpoint_best.pt",
    log:
        "logs/{dataset}/fit_baseline/{model}.log",
    benchmark:
        "benchmarks/{dataset}/fit_baseline/{model}.tsv"
    wildcard_constraints:
        model=alternatives(BASELINE_MODELS),
    conda:
        "../../envs/deconflow.yaml"
    params:
        settings=baseline_settings,
    script:
        "../scripts/fit_baseline.py"


rule train_model:
    input:
        unpack(training_inputs),
    output:
        best="results/{dataset}/models/{model}/checkpoint_best.pt",
        last="results/{dataset}/models/{model}/checkpoint_last.pt",
        history=report(
            "results/{dataset}/models/{model}/training_log.csv",
            caption="../report/training.rst",
            category="{dataset}",
            subcategory="{model}",
            labels={"table": "training log"},
        ),
    log:
        "logs/{dataset}/train_model/{model}.log",
    benchmark:
        "benchmarks/{dataset}/train_model/{model}.tsv"
    wildcard_constraints:
        model=alternatives(LEARNED_MODELS),
    conda:
        "../../envs/deconflow.yaml"
    resources:
        gpu=1,
    params:
        settings=model_settings,
        dataset=reader_settings,
        seed=config["seed"],
        tensorboard_dir="results/{dataset}/models/{model}/tensorboard",
    script:
        "../scripts/train_model.py"
