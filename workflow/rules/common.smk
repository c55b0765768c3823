# Helpers shared by all rules: config access, wildcard constraints, input functions.
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from deconflow.errors import DeconflowError
from deconflow.io.bulks import expand_bulk_paths
from deconflow.peers import PEERS as PEER_SPECS
from deconflow.registry import ADAPTS_TO_BULK, MODULES, USES_LINEAR_FIT, USES_READ_FIT
from deconflow.truth import named_bulks

LIBRARY = Path(workflow.basedir) / "src" / "deconflow"
SPLITS = ["train", "val", "test"]
NEVER_MATCHES = "(?!x)x"


def _fail(problem, fix):
    raise WorkflowError(f"config: {problem}. Fix: {fix}")


def dataset_models(dataset):
    """Models of one dataset: its own `models` list, else the global one."""
    return list(config["datasets"][dataset].get("models") or config["models"])


DATASETS = list(config["datasets"])
# every model used by any dataset (the {model} wildcard's values)
MODELS = list(dict.fromkeys(m for d in DATASETS for m in dataset_models(d)))
unknown_models = [m for m in MODELS if m not in MODULES]
if unknown_models:
    _fail(
        f"unknown model(s) {unknown_models} in `models`",
        f"use any of {sorted(MODULES)}",
    )


def dataset_peers(dataset):
    """Peers (published tools) of one dataset: its own `peers` list, else the global one; RNA
    datasets only (the global list does not apply to methylation datasets)."""
    ds = config["datasets"][dataset]
    if ds.get("modality", "rna") != "rna":
        if ds.get("peers"):
            _fail(
                f"dataset {dataset!r} is a methylation dataset but lists peers {ds['peers']}",
                "remove `peers` from it (the peers deconvolve RNA bulk)",
            )
        return []
    peers = ds.get("peers")
    return list(config.get("peers", []) if peers is None else peers)


# every peer used by any dataset (the {peer} wildcard's values; also values of {model} for the
# rules downstream of the proportions: evaluation, comparison, plots)
PEERS = list(dict.fromkeys(p for d in DATASETS for p in dataset_peers(d)))
unknown_peers = [p for p in PEERS if p not in PEER_SPECS]
if unknown_peers:
    _fail(
        f"unknown peer(s) {unknown_peers} in `peers`",
        f"use any of {sorted(PEER_SPECS)}",
    )
clashing = sorted(set(PEERS) & set(MODELS))
if clashing:
    _fail(
        f"{clashing} are both models and peers", "list each name in `models` or `peers`"
    )


def datasets_of(modality):
    return [
        d for d, c in config["datasets"].items() if c.get("modality", "rna") == modality
    ]


def dataset_bulks(dataset):
    """The dataset's named bulk inputs: {name: {path, truth, truth_groups}} (`bulk: PATH` is one
    bulk named `bulk`, see deconflow.truth.named_bulks)."""
    return named_bulks(config["datasets"][dataset].get("bulk"))


def bulks_with_truth(dataset):
    return [name for name, b in dataset_bulks(dataset).items() if b["truth"]]


# every bulk name of any dataset (the {bulk} wildcard's values)
BULKS = list(dict.fromkeys(b for d in DATASETS for b in dataset_bulks(d)))
BULKS_WITH_TRUTH = list(dict.fromkeys(b for d in DATASETS for b in bulks_with_truth(d)))


def alternatives(names):
    """Regex matching exactly one of `names` (or nothing, for an empty list)."""
    return "|".join(re.escape(n) for n in names) if names else NEVER_MATCHES


wildcard_constraints:
    dataset=alternatives(DATASETS),
    model=alternatives(MODELS + PEERS),
    peer=alternatives(PEERS),
    bulk=alternatives(BULKS),
    split="|".join(SPLITS),


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


#: deconflow.io: its __init__ imports every module of the package, so a job that reads or writes
#: anything imports them all (the package's own layers: src/deconflow/io/__init__.py)
IO_FILES = tuple(
    f"io/{m}"
    for m in (
        "__init__",
        "tables",
        "files",
        "genes",
        "references",
        "mixtures",
        "bulks",
        "methylation_calls",
        "data",
    )
)


def library_files(*modules):
    """Library sources imported by a job, declared as inputs so that editing them reruns it."""
    return [
        str(LIBRARY / f"{m}.py")
        for m in ("errors",) + IO_FILES + ("threads", "logs") + modules
    ]


# Library sources of a model's jobs, as patterns ({model} is filled in like any wildcard): static
# patterns rather than input functions keep the dry run of large DAGs fast. A model module imports
# only models/base and nnls's solvers (which use the marker selection of signature.py); the
# trainer above them adds its own files in training_inputs.
MODEL_CODE = library_files(
    "registry",
    "models/__init__",
    "models/base",
    "models/nnls",
    "signature",
    "normalize",
    "read_evidence",
) + [str(LIBRARY / "models" / "{model}.py")]


def reference_file(wildcards):
    return dataset_config(wildcards)["reference"]


def bulk_entry(wildcards):
    bulks = dataset_bulks(wildcards.dataset)
    if wildcards.bulk not in bulks:
        _fail(
            f"dataset {wildcards.dataset!r} has no bulk named {wildcards.bulk!r}",
            f"use one of {sorted(bulks)} or add it under `datasets.{wildcards.dataset}.bulk`",
        )
    return bulks[wildcards.bulk]


def bulk_file(wildcards):
    """The bulk's file, or its per-sample files (a list / globs / a folder, expanded and sorted)."""
    spec = bulk_entry(wildcards)["path"]
    try:
        files = expand_bulk_paths(spec, key=f"datasets.{wildcards.dataset}.bulk")
    except DeconflowError as error:
        raise WorkflowError(f"config: {error}") from None
    return files[0] if isinstance(spec, str) and len(files) == 1 else files


# The GENCODE v22 gene table made by convert_gene_table, to match Ensembl-ID bulks to symbols.
DEFAULT_GENE_TABLE = "resources/genes/gencode.v22.genes.tsv"


def gene_table_file(wildcards):
    """The dataset's `gene_table` (default: the embedded GENCODE v22 table; null: none)."""
    return dataset_config(wildcards).get("gene_table", DEFAULT_GENE_TABLE) or []


def reference_side_files(wildcards):
    """Files read with the reference: its label table and the members of a 10x matrix folder."""
    ds = dataset_config(wildcards)
    files = [ds["labels"]] if ds.get("labels") else []
    reference = Path(ds.get("reference", ""))
    if ds.get("reference") and reference.is_dir():
        files += [str(reference / name) for name in REFERENCE_FOLDER_FILES]
    return files


REFERENCE_FOLDER_FILES = ["matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz"]


def deconvolution_inputs(wildcards):
    """RNA bulks are matched to the model's genes through the reference's own Ensembl IDs and the
    gene table (and summed to genes through `tx2gene` for transcript-level salmon files); a bulk's
    `cell_mrna` table converts the proportions to its mRNA content per cell.
    """
    # passed for methylation bulks too, so that the library refuses them with a clear message
    cell_mrna = bulk_entry(wildcards).get("cell_mrna")
    if modality(wildcards) != "rna":
        return {"cell_mrna": cell_mrna} if cell_mrna else {}
    inputs = {
        "reference": reference_file(wildcards),
        "reference_files": reference_side_files(wildcards),
    }
    if cell_mrna:
        inputs["cell_mrna"] = cell_mrna
    if gene_table_file(wildcards):
        inputs["gene_table"] = gene_table_file(wildcards)
    if bulk_entry(wildcards).get("tx2gene"):
        inputs["tx2gene"] = bulk_entry(wildcards)["tx2gene"]
    return inputs


def bulk_settings(wildcards):
    """How to read the bulk (format, quantity, STAR strand) and the reference's gene identifiers."""
    entry, ds = bulk_entry(wildcards), dataset_config(wildcards)
    return {
        "bulk_format": entry.get("format"),
        "quantity": entry.get("quantity", "counts"),
        "strand": entry.get("strand"),
        "gene_column": ds.get("gene_column"),
        "counts_layer": ds.get("counts_layer"),
    }


def truth_file(wildcards):
    truth = bulk_entry(wildcards)["truth"]
    if not truth:
        _fail(
            f"bulk {wildcards.bulk!r} of dataset {wildcards.dataset!r} has no `truth`",
            "add `truth` and `truth_groups` to it (see config/README.md)",
        )
    return truth


def truth_settings(wildcards):
    """What the real-bulk evaluation reads besides its inputs (params: changing them reruns it)."""
    return {
        "truth_groups": bulk_entry(wildcards)["truth_groups"],
        "bulk_path": bulk_entry(wildcards)["path"],
        "key": f"datasets.{wildcards.dataset}.bulk.{wildcards.bulk}",
    }


def mixture_file(split):
    return f"results/{{dataset}}/pseudobulk/{split}.h5"


def reader_settings(wildcards):
    """How to read the dataset's reference (label key, counts layer, donor key)."""
    ds = dataset_config(wildcards)
    return {
        "label_key": ds.get("label_key", "cell_type"),
        "counts_layer": ds.get("counts_layer"),
        "donor_key": ds.get("donor_key"),
        "labels": ds.get("labels"),
        "gene_column": ds.get("gene_column"),
        "modality": ds.get("modality", "rna"),
    }


CHECKPOINT = "results/{dataset}/models/{model}/checkpoint_best.pt"


def all_outputs(wildcards):
    outputs = []
    for dataset, ds in config["datasets"].items():
        outputs.append(f"results/{dataset}/evaluation/comparison.csv")
        for model in dataset_models(dataset) + dataset_peers(dataset):
            outputs.append(f"results/{dataset}/plots/{model}/miami.png")
            outputs.append(f"results/{dataset}/plots/{model}/scatter.png")
            if model in MODULES and MODULES[model][1]:  # learned: has a training log
                outputs.append(f"results/{dataset}/plots/{model}/training_curves.png")
            for bulk in dataset_bulks(dataset):
                outputs.append(
                    f"results/{dataset}/deconvolution/{bulk}/{model}/proportions.csv"
                )
                outputs.extend(trust_files(dataset, bulk, model).values())
            for bulk in bulks_with_truth(dataset):
                outputs.append(f"results/{dataset}/plots/bulk_{bulk}/{model}/miami.png")
                outputs.append(
                    f"results/{dataset}/plots/bulk_{bulk}/{model}/scatter.png"
                )
        for bulk in bulks_with_truth(dataset):
            outputs.append(f"results/{dataset}/bulk_evaluation/{bulk}/comparison.csv")
    return outputs


def split_seed(wildcards):
    """Each split gets its own seed derived from the global one (reproducible, independent)."""
    return int(config["seed"]) * 1000 + SPLITS.index(wildcards.split)


def dataset_pseudobulk(dataset):
    """The `pseudobulk` section with the dataset's own `pseudobulk` overrides on top."""
    return {**config["pseudobulk"], **config["datasets"][dataset].get("pseudobulk", {})}


def pseudobulk_settings(wildcards):
    pb = dataset_pseudobulk(wildcards.dataset)
    return {
        "n_mixtures": int(pb[f"n_{wildcards.split}"]),
        "cells_per_mixture": int(pb["cells_per_mixture"]),
        "sparse_fraction": float(pb["sparse_fraction"]),
        "dirichlet_alpha": float(pb["dirichlet_alpha"]),
        "min_present": int(pb["min_present"]),
        "max_present": pb["max_present"],
    }


BASELINE_MODELS = [m for m in MODELS if not MODULES[m][1]]
LEARNED_MODELS = [m for m in MODELS if MODULES[m][1]]


def linear_fit_settings(wildcards):
    """The `linear_fit` section for models that use it (modality rna), with the dataset's
    `sibling_types` as its `siblings`; else nothing."""
    if wildcards.model in USES_LINEAR_FIT and modality(wildcards) == "rna":
        siblings = [
            list(pair) for pair in dataset_config(wildcards).get("sibling_types", [])
        ]
        return {"linear_fit": {**config["linear_fit"], "siblings": siblings}}
    return {}


def baseline_settings(wildcards):
    """Settings of a non-learned fit: `linear_fit` (nnls, RNA) or `methylation_evidence` (nnls_reads)."""
    if wildcards.model in USES_READ_FIT:
        return {"methylation_evidence": methylation_evidence_settings(wildcards)}
    return linear_fit_settings(wildcards)


def model_settings(wildcards):
    """Shared training settings plus the model's own sub-section (only these trigger a rerun)."""
    train = config.get("train", {})
    shared = {k: v for k, v in train.items() if not isinstance(v, dict)}
    return {
        **shared,
        **train.get(wildcards.model, {}),
        **linear_fit_settings(wildcards),
    }


def training_inputs(wildcards):
    inputs = {
        "train": f"results/{wildcards.dataset}/pseudobulk/train.h5",
        "val": f"results/{wildcards.dataset}/pseudobulk/val.h5",
        "signature": f"results/{wildcards.dataset}/signature/signature.tsv",
        "code": [c.format(model=wildcards.model) for c in MODEL_CODE]
        + library_files("training", "cell_content", "evaluation", "normalize", "split"),
    }
    if dataset_config(wildcards).get("modality", "rna") == "rna":
        inputs["reference"] = reference_file(wildcards)
        inputs["reference_files"] = reference_side_files(wildcards)
        inputs["split"] = f"results/{wildcards.dataset}/split/cells.tsv"
        inputs["library_size"] = library_size_file(wildcards)
        inputs["detection"] = detection_file(wildcards)
    return inputs


def modality(wildcards):
    return dataset_config(wildcards).get("modality", "rna")


def library_size_file(wildcards):
    """Per-type mean library size (RNA: written by build_signature), for cell fractions."""
    if modality(wildcards) == "rna":
        return f"results/{wildcards.dataset}/signature/cell_library_size.tsv"
    return []


def detection_file(wildcards):
    """Per-gene, per-type detection rates of the train cells (RNA: written by build_signature),
    for the linear fit's `sibling_types` split."""
    if modality(wildcards) == "rna":
        return f"results/{wildcards.dataset}/signature/detection.tsv"
    return []


EVALUATION_CODE = MODEL_CODE + library_files("evaluation")
DECONVOLUTION_CODE = MODEL_CODE + library_files(
    "deconvolve",
    "cell_content",
    "normalize",
    "models/adaptation",
)


# Methylation datasets (workflow/rules/methylation.smk)
def methylation_atlas_inputs(wildcards):
    """The dataset's atlas: a betas TSV (`atlas`) or pure-sample read counts."""
    ds = dataset_config(wildcards)
    if ds.get("atlas_methylated"):
        return {"methylated": ds["atlas_methylated"], "total": ds["atlas_total"]}
    return {"atlas": ds.get("atlas", DEFAULT_ATLAS)}


def methylation_simulation_settings(wildcards):
    """Simulator settings: config `methylation` section, then the dataset's `simulation` overrides."""
    merged = {
        **config.get("methylation", {}),
        **dataset_config(wildcards).get("simulation", {}),
    }
    return {
        "settings": {k: v for k, v in merged.items() if k != "spike_fraction_test"},
        "spike_fraction_test": float(merged.get("spike_fraction_test", 0.25)),
        "n_mixtures": int(
            dataset_pseudobulk(wildcards.dataset)[f"n_{wildcards.split}"]
        ),
    }


def atlas_min_coverage(wildcards):
    return int(dataset_config(wildcards).get("atlas_min_coverage", 1))


def comparison_inputs(wildcards):
    return [
        f"results/{wildcards.dataset}/evaluation/{model}/metrics.json"
        for model in comparison_models(wildcards)
    ]


def bulk_comparison_inputs(wildcards):
    return [
        f"results/{wildcards.dataset}/bulk_evaluation/{wildcards.bulk}/{model}/metrics.json"
        for model in comparison_models(wildcards)
    ]


def comparison_models(wildcards):
    """Rows of a comparison table: the dataset's models, then its peers."""
    return dataset_models(wildcards.dataset) + dataset_peers(wildcards.dataset)


def comparison_kinds(wildcards):
    """`model` or `peer` for each row of comparison_models."""
    return ["model"] * len(dataset_models(wildcards.dataset)) + ["peer"] * len(
        dataset_peers(wildcards.dataset)
    )


def plot_title(wildcards):
    """Plot title: dataset, real bulk if any, model (peers marked as such)."""
    parts = [wildcards.dataset]
    if "bulk" in wildcards.keys():
        parts.append(f"real bulk {wildcards.bulk}")
    kind = " (peer)" if wildcards.model in PEERS else ""
    return " / ".join(parts + [wildcards.model + kind])


# Per-sample trust (deconflow.trust): calibration on the validation mixtures (RNA models), the
# interval level, quality-row settings.
TRUST_CODE = library_files("trust", "evaluation", "threads", "depth")
CALIBRATION = "results/{dataset}/models/{model}/calibration.json"


def trust_files(dataset, bulk, model, names=("qc", "intervals")):
    """{name: path} of the per-sample trust files (deconflow.trust) of a model on a bulk; peers
    have none."""
    if model in PEERS:
        return {}
    return {
        name: f"results/{dataset}/deconvolution/{bulk}/{model}/{name}.csv"
        for name in names
    }


def bulk_intervals_input(wildcards):
    """A model's intervals.csv of the bulk (scored against the truth's groups)."""
    return trust_files(
        wildcards.dataset, wildcards.bulk, wildcards.model, ("intervals",)
    )


def bulk_qc_input(wildcards):
    """A model's qc.csv of the bulk (flagged samples marked in its Miami plot)."""
    return trust_files(wildcards.dataset, wildcards.bulk, wildcards.model, ("qc",))


def calibration_inputs(wildcards):
    """The model's calibration.json (RNA datasets; methylation models are not calibrated)."""
    if modality(wildcards) == "rna":
        return {"calibration": CALIBRATION.format(**wildcards)}
    return {}


def deconvolution_calibration_inputs(wildcards):
    """The model's calibration.json for the quality rows of real bulks: every dataset (methylation
    models use theirs for the residual check of qc.csv only, not for intervals)."""
    return {"calibration": CALIBRATION.format(**wildcards)}


# Cells of no reference type (deconflow.other_cells): one calibration per RNA dataset, read by
# every model's deconvolution (qc.csv columns other_cells*, absolute fractions on request).
OTHER_CELLS = "results/{dataset}/models/other_cells.json"
OTHER_CELLS_CODE = library_files(
    "other_cells",
    "trust",
    "depth",
    "evaluation",
    "registry",
    "models/__init__",
    "models/base",
    "pseudobulk",
    "split",
    "normalize",
    "models/nnls",
    "signature",
)
#: `other_cells` keys read at deconvolution, not at calibration
OTHER_CELLS_DECONVOLUTION_KEYS = ("absolute_fractions",)


def other_cells_inputs(wildcards):
    """The dataset's other-cells calibration (RNA datasets only)."""
    if modality(wildcards) == "rna":
        return {"other_cells": OTHER_CELLS.format(dataset=wildcards.dataset)}
    return {}


def other_cells_settings(wildcards):
    """What calibrate_other_cells depends on: the `other_cells` keys fixed at calibration, the
    linear fit's cap, the interval replicates and the pseudobulk draws of the other types.
    """
    pb = dataset_pseudobulk(wildcards.dataset)
    return {
        "settings": {
            k: v
            for k, v in config.get("other_cells", {}).items()
            if k not in OTHER_CELLS_DECONVOLUTION_KEYS
        },
        "linear_fit": {
            "max_bulk_ratio": config.get("linear_fit", {}).get("max_bulk_ratio")
        },
        "intervals": calibration_settings(wildcards),
        "mixtures": {
            "cells_per_mixture": int(pb["cells_per_mixture"]),
            "sparse_fraction": float(pb["sparse_fraction"]),
            "dirichlet_alpha": float(pb["dirichlet_alpha"]),
            "min_present": int(pb["min_present"]),
            "max_present": pb["max_present"],
        },
    }


def absolute_fractions(wildcards):
    """`other_cells.absolute_fractions` (RNA): proportions.csv holds absolute fractions."""
    if modality(wildcards) != "rna":
        return False
    return bool(config.get("other_cells", {}).get("absolute_fractions", False))


def calibration_settings(wildcards):
    """What calibrate_model depends on: every `intervals` key but `level`."""
    return {k: v for k, v in config.get("intervals", {}).items() if k != "level"}


def interval_level(wildcards):
    return float(config.get("intervals", {}).get("level", 0.9))


def methylation_evidence_settings(wildcards):
    """`methylation_evidence` (evidence rule, detection test, `tissues`) of methylation datasets
    (empty for RNA ones, so that editing it reruns no RNA job)."""
    if dataset_config(wildcards).get("modality") != "methylation":
        return {}
    return dict(config.get("methylation_evidence") or {})


def qc_settings(wildcards):
    """`qc` settings and the dataset's `plausible_fractions`."""
    return {
        "min_overlap_fraction": float(
            config.get("qc", {}).get("min_overlap_fraction", 0.5)
        ),
        "min_reads": float(config.get("qc", {}).get("min_reads", 100000)),
        "min_nonzero_fraction": float(
            config.get("qc", {}).get("min_nonzero_fraction", 0.1)
        ),
        "plausible_fractions": dict(
            dataset_config(wildcards).get("plausible_fractions") or {}
        ),
    }


def adaptation_inputs(wildcards):
    """The training mixtures a model with an adaptation step (hpvade) is adapted to the bulk with
    (`deconvolution.adapt`, RNA only; deconflow.models.adaptation)."""
    if (
        modality(wildcards) == "rna"
        and adaptation_settings(wildcards)["enabled"]
        and wildcards.model in ADAPTS_TO_BULK
    ):
        return {"mixtures": f"results/{wildcards.dataset}/pseudobulk/train.h5"}
    return {}


def adaptation_settings(wildcards):
    section = config.get("deconvolution", {})
    return {
        "enabled": bool(section.get("adapt", True)),
        "min_samples": int(section.get("adapt_min_samples", 3)),
    }
