# CPM pseudobulk mixtures with known proportions, one file per split (never log-transformed).


rule make_pseudobulk:
    input:
        reference=reference_file,
        reference_files=reference_side_files,
        cells="results/{dataset}/split/cells.tsv",
        code=library_files("normalize", "pseudobulk", "split"),
    output:
        mixtures="results/{dataset}/pseudobulk/{split}.h5",
    log:
        "logs/{dataset}/make_pseudobulk/{split}.log",
    benchmark:
        "benchmarks/{dataset}/make_pseudobulk/{split}.tsv"
    wildcard_constraints:
        dataset=alternatives(datasets_of("rna")),
    conda:
        "../../envs/deconflow.yaml"
    params:
        reader=reader_settings,
        settings=pseudobulk_settings,
        seed=split_seed,
    script:
        "../scripts/make_pseudobulk.py"
