# Peers: published deconvolution tools (config `peers`) run beside deconflow's models on the same
# reference cells (the train pool) and the same samples (test mixtures, every real bulk). Each
# peer runs in its own pinned venv (envs/peers/<peer>.txt, built by the local rule peer_env, the
# only rule that needs the network) or, with --sdm conda, in envs/peers/<peer>.yaml. Their
# proportions land where the models' do, so evaluation, comparison tables, plots and the report
# show them as rows of kind `peer` (deconflow.peers).


include: "peers_inputs.smk"


localrules:
    peer_env,


# Rebuilt only when the pin file changes (mtime): a shell command, so that neither the library
# code nor a script file is a trigger (snakemake reruns `script:` rules when the script is newer).
rule peer_env:
    input:
        pins="envs/peers/{peer}.txt",
    output:
        stamp=f"{PEER_ENV_DIR}/{{peer}}/installed.txt",
    log:
        "logs/peers/peer_env/{peer}.log",
    benchmark:
        "benchmarks/peers/peer_env/{peer}.tsv"
    conda:
        "../../envs/deconflow.yaml"
    params:
        env_dir=env_dir_of_stamp,
    shell:
        "python -m deconflow.peers build-env {wildcards.peer} {input.pins:q} {params.env_dir:q} --log {log:q}"


# The samples handed to the peers: h5ad, samples x the reference genes they share, linear CPM.
rule peer_test_input:
    input:
        test=mixture_file("test"),
        code=library_files("peers"),
    output:
        bulk=f"results/{{dataset}}/peers/inputs/{PEER_TARGET_TEST}.h5ad",
    log:
        "logs/{dataset}/peer_test_input.log",
    conda:
        "../../envs/deconflow.yaml"
    script:
        "../scripts/peer_test_input.py"


rule peer_bulk_input:
    input:
        unpack(peer_bulk_inputs),
        bulk=bulk_file,
        code=library_files("peers", "normalize"),
    output:
        bulk="results/{dataset}/peers/inputs/bulk_{bulk}.h5ad",
    log:
        "logs/{dataset}/peer_bulk_input/{bulk}.log",
    benchmark:
        "benchmarks/{dataset}/peer_bulk_input/{bulk}.tsv"
    conda:
        "../../envs/deconflow.yaml"
    params:
        min_overlap=config["deconvolution"]["min_feature_overlap"],
        bulk=bulk_settings,
        reader=reader_settings,
    script:
        "../scripts/peer_bulk_input.py"


# Train-pool cells (raw counts) on the genes shared by the reference and every bulk of the
# dataset, at most `peer_max_cells_per_type` of each type (seeded), read and written a chunk at a
# time: Rectangle's signature is built once per dataset from them.
rule peer_reference:
    input:
        reference=reference_file,
        reference_files=reference_side_files,
        cells="results/{dataset}/split/cells.tsv",
        bulks=peer_reference_genes_inputs,
        code=library_files("peers", "split"),
    output:
        reference="results/{dataset}/peers/inputs/reference.h5ad",
    log:
        "logs/{dataset}/peer_reference.log",
    benchmark:
        "benchmarks/{dataset}/peer_reference.tsv"
    conda:
        "../../envs/deconflow.yaml"
    params:
        reader=reader_settings,
        max_cells_per_type=config.get("peer_max_cells_per_type"),
        seed=config["seed"],
    script:
        "../scripts/peer_reference.py"


# PYTHONHASHSEED=0: Rectangle orders its signature genes through a Python set of strings, so
# without a fixed hash seed two runs on the same cells pickle the same genes in another order.
rule peer_signature:
    input:
        env=peer_env_input,
        reference="results/{dataset}/peers/inputs/reference.h5ad",
        script="workflow/scripts/peer_{peer}.py",
    output:
        signature="results/{dataset}/peers/{peer}/signature.pkl",
    log:
        "logs/{dataset}/peer_signature/{peer}.log",
    benchmark:
        "benchmarks/{dataset}/peer_signature/{peer}.tsv"
    wildcard_constraints:
        peer=alternatives([p for p in PEERS if PEER_SPECS[p].reference == "cells"]),
    conda:
        "../../envs/peers/{peer}.yaml"
    threads: PEER_THREADS
    params:
        python=peer_python,
        settings=peer_settings,
    shell:
        "PYTHONHASHSEED=0 {params.python} {input.script:q} signature --reference {input.reference:q} --out {output.signature:q}"
        " --threads {threads} --settings {params.settings:q} --log {log:q} > {log:q} 2>&1"
        " || {{ tail -n 1 {log:q} >&2; exit 1; }}"


rule peer_deconvolve:
    input:
        env=peer_env_input,
        reference=peer_reference_input,
        bulk="results/{dataset}/peers/inputs/{target}.h5ad",
        script="workflow/scripts/peer_{peer}.py",
    output:
        raw="results/{dataset}/peers/{peer}/raw/{target}.csv",
    log:
        "logs/{dataset}/peer_deconvolve/{peer}/{target}.log",
    benchmark:
        "benchmarks/{dataset}/peer_deconvolve/{peer}/{target}.tsv"
    wildcard_constraints:
        target=f"{PEER_TARGET_TEST}|bulk_({alternatives(BULKS)})",
    conda:
        "../../envs/peers/{peer}.yaml"
    threads: PEER_THREADS
    params:
        python=peer_python,
        settings=peer_settings,
    shell:
        "PYTHONHASHSEED=0 {params.python} {input.script:q} deconvolve --reference {input.reference:q} --bulk {input.bulk:q}"
        " --out {output.raw:q} --threads {threads} --settings {params.settings:q} --log {log:q} > {log:q} 2>&1"
        " || {{ tail -n 1 {log:q} >&2; exit 1; }}"


# The peer's raw output -> deconflow's proportions (cell fractions in the reference's types).
rule evaluate_peer:
    input:
        raw=f"results/{{dataset}}/peers/{{model}}/raw/{PEER_TARGET_TEST}.csv",
        test=mixture_file("test"),
        library_size="results/{dataset}/signature/cell_library_size.tsv",
        code=library_files("peers", "evaluation", "cell_content"),
    output:
        summary="results/{dataset}/evaluation/{model}/summary_stats.csv",
        metrics="results/{dataset}/evaluation/{model}/metrics.json",
    log:
        "logs/{dataset}/evaluate_peer/{model}.log",
    wildcard_constraints:
        model=alternatives(PEERS),
    conda:
        "../../envs/deconflow.yaml"
    params:
        presence_threshold=config["evaluation"]["presence_threshold"],
    script:
        "../scripts/evaluate_peer.py"


rule peer_proportions:
    input:
        unpack(peer_proportion_inputs),
        code=library_files("peers", "cell_content"),
    output:
        proportions="results/{dataset}/deconvolution/{bulk}/{model}/proportions.csv",
    log:
        "logs/{dataset}/peer_proportions/{bulk}/{model}.log",
    wildcard_constraints:
        model=alternatives(PEERS),
    conda:
        "../../envs/deconflow.yaml"
    script:
        "../scripts/peer_proportions.py"
