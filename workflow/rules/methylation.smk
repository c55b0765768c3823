# cfDNA methylation (datasets with `modality: methylation`): the atlas is the reference and the
# signature; mixtures are simulated from it (cfDNA-like, sparse, with read-level noise) into the
# same results/{dataset}/pseudobulk/{split}.h5 layout as the RNA pseudobulk.
# Embedded default atlas: Loyfer et al. (2023), from the nanomix 0.2.0 wheel (MIT; only unzipped).
NANOMIX_WHEEL = "resources/downloads/nanomix-0.2.0-cp39-cp39-manylinux_2_31_x86_64.whl"
DEFAULT_ATLAS = "resources/loyfer2023/atlas.tsv"


localrules:
    fetch_nanomix_wheel,


rule fetch_nanomix_wheel:
    output:
        wheel=NANOMIX_WHEEL,
    log:
        "logs/resources/fetch_nanomix_wheel.log",
    conda:
        "../../envs/deconflow.yaml"
    params:
        package="nanomix==0.2.0",
    shell:
        "python -m pip download --no-deps --only-binary=:all: --python-version 3.9"
        " --platform manylinux_2_31_x86_64 {params.package:q}"
        " -d $(dirname {output.wheel:q}) > {log:q} 2>&1"


rule convert_methylation_atlas:
    input:
        wheel=NANOMIX_WHEEL,
        code=library_files("methylation"),
    output:
        atlas=DEFAULT_ATLAS,
    log:
        "logs/resources/convert_methylation_atlas.log",
    conda:
        "../../envs/deconflow.yaml"
    script:
        "../scripts/convert_methylation_atlas.py"


rule methylation_signature:
    input:
        unpack(methylation_atlas_inputs),
        code=library_files("methylation"),
    output:
        signature="results/{dataset}/signature/signature.tsv",
    log:
        "logs/{dataset}/methylation_signature.log",
    wildcard_constraints:
        dataset=alternatives(datasets_of("methylation")),
    conda:
        "../../envs/deconflow.yaml"
    params:
        min_coverage=atlas_min_coverage,
    script:
        "../scripts/methylation_signature.py"


rule simulate_methylation:
    input:
        atlas="results/{dataset}/signature/signature.tsv",
        code=library_files("methylation"),
    output:
        mixtures="results/{dataset}/pseudobulk/{split}.h5",
    log:
        "logs/{dataset}/simulate_methylation/{split}.log",
    benchmark:
        "benchmarks/{dataset}/simulate_methylation/{split}.tsv"
    wildcard_constraints:
        dataset=alternatives(datasets_of("methylation")),
    conda:
        "../../envs/deconflow.yaml"
    params:
        simulation=methylation_simulation_settings,
        seed=split_seed,
    script:
        "../scripts/simulate_methylation.py"
