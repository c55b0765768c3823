# Deconvolution of the dataset's real bulk samples with each fitted model, one job per named bulk:
# proportions, calibrated intervals and one quality row per sample (deconflow.trust), with the
# fraction of cells of no reference type (deconflow.other_cells, calibrated once per dataset).
# Methylation datasets run the same rule as deconvolve_bulk_methylation, which also declares the
# read test's tissues.csv and detection.csv (deconflow.deconvolve writes them for every methylation
# bulk), so that Snakemake tracks them, reruns them and removes them when the job fails.


rule calibrate_other_cells:
    input:
        reference=reference_file,
        reference_files=reference_side_files,
        cells="results/{dataset}/split/cells.tsv",
        signature="results/{dataset}/signature/signature.tsv",
        library_size=library_size_file,
        code=OTHER_CELLS_CODE,
    output:
        calibration=OTHER_CELLS,
    log:
        "logs/{dataset}/calibrate_other_cells.log",
    benchmark:
        "benchmarks/{dataset}/calibrate_other_cells.tsv"
    wildcard_constraints:
        dataset=alternatives(datasets_of("rna")),
    conda:
        "../../envs/deconflow.yaml"
    params:
        reader=reader_settings,
        settings=other_cells_settings,
        seed=config["seed"],
    script:
        "../scripts/calibrate_other_cells.py"


rule deconvolve_bulk:
    input:
        unpack(deconvolution_inputs),
        unpack(deconvolution_calibration_inputs),
        unpack(other_cells_inputs),
        unpack(adaptation_inputs),
        model=CHECKPOINT,
        bulk=bulk_file,
        code=DECONVOLUTION_CODE + TRUST_CODE + library_files("other_cells"),
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
        dataset=alternatives(datasets_of("rna")),
        model=alternatives(MODELS),
    conda:
        "../../envs/deconflow.yaml"
    params:
        min_overlap=config["deconvolution"]["min_feature_overlap"],
        bulk=bulk_settings,
        level=interval_level,
        qc=qc_settings,
        absolute=absolute_fractions,
        methylation_evidence=methylation_evidence_settings,
        adapt=adaptation_settings,
    script:
        "../scripts/deconvolve_bulk.py"


use rule deconvolve_bulk as deconvolve_bulk_methylation with:
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
        tissues="results/{dataset}/deconvolution/{bulk}/{model}/tissues.csv",
        detection="results/{dataset}/deconvolution/{bulk}/{model}/detection.csv",
    wildcard_constraints:
        dataset=alternatives(datasets_of("methylation")),
        model=alternatives(MODELS),
