# Input functions and settings of the peers' rules (workflow/rules/peers.smk, the only stage
# that uses them; kept in a file of their own because snakemake --lint wants rules and functions apart).
#: where the peers' venvs live (config `peer_env_dir`; tests share one folder between runs)
PEER_ENV_DIR = config.get("peer_env_dir", ".peers")
PEER_TARGET_TEST = "pseudobulk_test"


def peer_threads():
    """Threads of a peer's signature and deconvolution jobs: 2, but locally at most half the
    cores, so that on a 2-core machine they run beside the training job instead of waiting until
    every other job is done (docs/benchmarks.md). Cluster jobs: 2."""
    if not workflow.local_exec:
        return 2
    try:
        cores = int(workflow.cores)
    except (WorkflowError, TypeError, ValueError):
        return 2
    return max(1, min(2, cores // 2))


PEER_THREADS = peer_threads()


def uses_conda():
    from snakemake_interface_executor_plugins.settings import DeploymentMethod

    return DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method


def peer_env_stamp(peer):
    return f"{PEER_ENV_DIR}/{peer}/installed.txt"


def env_dir_of_stamp(wildcards, output):
    """<peer_env_dir> of a peer's stamp <peer_env_dir>/<peer>/installed.txt."""
    return str(Path(output.stamp).parent.parent)


def peer_env_input(wildcards):
    """The peer's venv (its stamp file), unless conda provides the environment."""
    return [] if uses_conda() else peer_env_stamp(wildcards.peer)


def peer_python(wildcards):
    """The peer's interpreter: its venv's, or the conda env's `python`."""
    if uses_conda():
        return "python"
    return f"{PEER_ENV_DIR}/{wildcards.peer}/venv/bin/python"


def peer_settings(wildcards):
    """JSON keyword arguments for the peer's public function (config `peer_settings.<peer>`)."""
    import json

    return json.dumps(
        config.get("peer_settings", {}).get(wildcards.peer, {}), sort_keys=True
    )


def peer_reference_input(wildcards):
    """Rectangle: its signature (built once per dataset); dtangle: the per-type mean CPM profiles
    of the train pool (the signature deconflow's models start from)."""
    if PEER_SPECS[wildcards.peer].reference == "cells":
        return f"results/{wildcards.dataset}/peers/{wildcards.peer}/signature.pkl"
    return f"results/{wildcards.dataset}/signature/signature.tsv"


def peer_bulk_inputs(wildcards):
    """What matching a bulk's genes to the reference reads (as deconvolve_bulk, without the
    bulk's `cell_mrna`, which only the conversion of the peer's output reads)."""
    return {
        k: v for k, v in deconvolution_inputs(wildcards).items() if k != "cell_mrna"
    }


def peer_reference_genes_inputs(wildcards):
    """Every bulk's matched genes: the reference for the peers is cut to the genes they all share."""
    return [
        f"results/{wildcards.dataset}/peers/inputs/bulk_{b}.h5ad"
        for b in dataset_bulks(wildcards.dataset)
    ]


def peer_proportion_inputs(wildcards):
    """A bulk's raw peer output, the reference's library sizes and the bulk's `cell_mrna`."""
    inputs = {
        "raw": f"results/{wildcards.dataset}/peers/{wildcards.model}/raw/bulk_{wildcards.bulk}.csv",
        "library_size": f"results/{wildcards.dataset}/signature/cell_library_size.tsv",
    }
    if bulk_entry(wildcards).get("cell_mrna"):
        inputs["cell_mrna"] = bulk_entry(wildcards)["cell_mrna"]
    return inputs
