# Signature matrix S (genes x cell types): per-cell-type mean CPM of the train pool.


rule build_signature:
    input:
        reference=reference_file,
        reference_files=reference_side_files,
        cells="results/{dataset}/split/cells.tsv",
        code=library_files("normalize", "signature", "split"),
    output:
        signature="results/{dataset}/signature/signature.tsv",
        library_size="results/{dataset}/signature/cell_library_size.tsv",
        detection="results/{dataset}/signature/detection.tsv",
    log:
        "logs/{dataset}/build_signature.log",
    benchmark:
        "benchmarks/{dataset}/build_signature.tsv"
    wildcard_constraints:
        dataset=alternatives(datasets_of("rna")),
    conda:
        "../../envs/deconflow.yaml"
    params:
        reader=reader_settings,
        marker_genes_per_type=config["signature"]["marker_genes_per_type"],
    script:
        "../scripts/build_signature.py"
