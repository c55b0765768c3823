# Deconvolution of the dataset's real bulk samples with each fitted model, one job per named bulk.


rule deconvolve_bulk:
    input:
        unpack(deconvolution_inputs),
        model=CHECKPOINT,
        bulk=bulk_file,
        code=DECONVOLUTION_CODE,
    output:
        proportions="results/{dataset}/deconvolution/{bulk}/{model}/proportions.csv",
    log:
        "logs/{dataset}/deconvolve_bulk/{bulk}/{model}.log",
    benchmark:
        "benchmarks/{dataset}/deconvolve_bulk/{bulk}/{model}.tsv"
    conda:
        "../../envs/deconflow.yaml"
    params:
        min_overlap=config["deconvolution"]["min_feature_overlap"],
        bulk=bulk_settings,
    script:
        "../scripts/deconvolve_bulk.py"
