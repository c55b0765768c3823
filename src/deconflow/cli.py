"""Command line: apply fitted models outside Snakemake, watch training, inspect checkpoints.

    deconflow deconvolve --model results/pbmc/models/nnls/checkpoint_best.pt --bulk bulk.tsv --out p.csv
    deconflow deconvolve --model results/cfdna/models/nnls_reads/checkpoint_best.pt --bulk 'calls/*.cov.gz' --out p.csv
    deconflow deconvolve --model results/pbmc/models/nnls/checkpoint_best.pt --bulk bulk.tsv --out out/p.csv --intervals --qc
    deconflow monitor results/pbmc/models/hpvade/training_log.csv [--watch]
    deconflow info results/pbmc/models/hpvade/checkpoint_best.pt
"""

from __future__ import annotations

import argparse
import json
import sys

from .errors import DeconflowError
from .logs import script_logging
from .threads import fixed_threads


def _deconvolve(args) -> None:
    from .deconvolve import deconvolve_file

    with script_logging(None):
        table = deconvolve_file(args.model, args.bulk, args.out, args.min_overlap, intervals=args.intervals, qc=args.qc,
                                calibration=args.calibration, plausible_fractions=_plausible(args.plausible),
                                min_overlap_fraction=args.min_overlap_fraction, min_reads=args.min_reads,
                                min_nonzero_fraction=args.min_nonzero_fraction, other_cells=args.other_cells,
                                absolute=args.absolute, adapt=_adapt(args),
                                mixtures=args.mixtures or _default_mixtures(args.model),
                                methylation_evidence={"false_call_rate": args.false_call_rate}, overwrite=args.overwrite,
                                **_bulk_settings(args))
    print(table.round(4).to_string())


def _bulk_settings(args) -> dict:
    """RNA bulk reading options; the embedded gene table is used when it exists and none is given."""
    from pathlib import Path

    gene_table = args.gene_table
    if gene_table is None and Path(DEFAULT_GENE_TABLE).exists():
        gene_table = DEFAULT_GENE_TABLE
    return {
        "bulk_format": args.format,
        "quantity": args.quantity,
        "strand": args.strand,
        "gene_table": gene_table or None,
        "reference": args.reference,
        "gene_column": args.gene_column,
        "tx2gene": args.tx2gene,
        "cell_mrna": args.cell_mrna,
    }


def _adapt(args) -> dict:
    """Adaptation settings (config keys `deconvolution.adapt`, `deconvolution.adapt_min_samples`)."""
    return {"enabled": not args.no_adapt, "min_samples": args.adapt_min_samples}


def _default_mixtures(model_path) -> str | None:
    """results/<dataset>/pseudobulk/train.h5 of the run that wrote results/<dataset>/models/<model>/checkpoint_best.pt."""
    from pathlib import Path

    path = Path(model_path).resolve().parents[2] / "pseudobulk" / "train.h5"
    return str(path) if path.is_file() else None


def _plausible(items) -> dict:
    """``["Tregs=0:0.08", ...]`` -> ``{"Tregs": [0.0, 0.08]}`` (config key `plausible_fractions`)."""
    out = {}
    for item in items or []:
        name, sep, bounds = item.rpartition("=")
        low, colon, high = bounds.partition(":")
        try:
            if not (sep and colon):
                raise ValueError
            out[name] = [float(low), float(high)]
        except ValueError:
            raise DeconflowError(None, f"--plausible {item!r} is not TYPE=LOW:HIGH", 'write e.g. --plausible "Tregs=0:0.08"') from None
    return out


#: The GENCODE v22 gene table made by the pipeline's convert_gene_table rule (relative to the project).
DEFAULT_GENE_TABLE = "resources/genes/gencode.v22.genes.tsv"


def _monitor(args) -> None:
    from .monitor import monitor

    monitor(args.history, n_last=args.last, watch=args.watch, interval=args.interval)


def _info(args) -> None:
    from .models import read_checkpoint

    ckpt = read_checkpoint(args.checkpoint)
    info = {
        "model": ckpt["model"],
        "normalization": ckpt.get("normalization"),
        "n_features": len(ckpt.get("feature_names", [])),
        "cell_types": ckpt.get("cell_types"),
        "provenance": ckpt.get("provenance", {}),
    }
    print(json.dumps(info, indent=2, sort_keys=True, default=str))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deconflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("deconvolve", help="estimate proportions of a bulk file with a fitted model")
    p.add_argument("--model", required=True, help="checkpoint_best.pt of any deconflow model")
    p.add_argument("--bulk", required=True, nargs="+",
                   help="bulk file(s) or a glob: features x samples TSV/CSV, h5ad (samples x features), featureCounts "
                        "output, nf-core/rnaseq merged tables, salmon quant.sf / quant.genes.sf, kallisto abundance.tsv/.h5, "
                        "RSEM *.genes.results, htseq-count files, STAR ReadsPerGene.out.tab (one per sample), or a folder of them; "
                        "methylation: one or more per-sample Bismark .cov(.gz) / MethylDackel .bedGraph files")
    p.add_argument("--format", choices=["table", "h5ad", "featurecounts", "nfcore", "salmon", "kallisto", "rsem", "htseq", "star",
                                           "bismark", "methyldackel", "modkit", "bedmethyl", "cytosine_report", "region_counts"],
                   default=None, help="bulk format (default: detected from the file name / content)")
    p.add_argument("--quantity", choices=["counts", "tpm"], default="counts",
                   help="salmon/kallisto/RSEM column: counts (NumReads / est_counts / expected_count, default) or tpm")
    p.add_argument("--strand", choices=["unstranded", "forward", "reverse"], default=None,
                   help="STAR ReadsPerGene.out.tab column (default: the one with most counts, logged)")
    p.add_argument("--gene-table", default=None,
                   help=f"gene table (ensembl_id, symbol) to match Ensembl IDs and symbols (default: {DEFAULT_GENE_TABLE} if it exists; '' for none)")
    p.add_argument("--reference", default=None, help="the model's reference, to match genes by its own Ensembl IDs (10x, h5ad with gene_ids)")
    p.add_argument("--gene-column", default=None, help="the reference's .var column with the second gene identifier (default: auto)")
    p.add_argument("--tx2gene", default=None, help="transcript -> gene table for transcript-level salmon quant.sf files")
    p.add_argument("--cell-mrna", default=None,
                   help="TSV of the bulk's mRNA content per cell of each type (cell_type, mrna_per_cell; `default` row for the rest): "
                        "converts the model's cell fractions to the bulk's protocol (config key `cell_mrna` of a bulk)")
    p.add_argument("--out", required=True, help="output CSV (samples x cell types)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out and the tables written beside it when they exist (default: refuse, write nothing)")
    p.add_argument("--intervals", nargs="?", type=float, const=0.9, default=None, metavar="LEVEL",
                   help="also write intervals.csv next to --out: calibrated intervals at LEVEL (default 0.9)")
    p.add_argument("--qc", action="store_true",
                   help="also write qc.csv next to --out: feature overlap, fit residual and its validation percentile, "
                        "fallback / cell_mrna applied, flags")
    p.add_argument("--calibration", default=None,
                   help="calibration.json of the model (default: the one next to --model, written by rule calibrate_model)")
    p.add_argument("--plausible", nargs="*", default=None, metavar="TYPE=LOW:HIGH",
                   help="plausible range of a cell type's fraction; outside it qc.csv flags implausible_TYPE")
    p.add_argument("--min-overlap-fraction", type=float, default=0.5,
                   help="qc.csv flags low_overlap below this share of the model's features (default 0.5)")
    p.add_argument("--min-reads", type=float, default=100000,
                   help="qc.csv flags low_depth below this many reads on the model's genes (count input; default 100000)")
    p.add_argument("--min-nonzero-fraction", type=float, default=0.1,
                   help="qc.csv flags low_depth below this share of the model's marker genes non-zero (default 0.1)")
    p.add_argument("--min-overlap", type=int, default=1000,
                   help="minimum number of shared genes (RNA) or regions (methylation betas tables; default 1000). Methylation call "
                        "files have no fixed floor: each atlas type is fitted when the sample covers its markers, the others are NaN")
    p.add_argument("--false-call-rate", type=float, default=None,
                   help="methylation calls: false-call rate of the detection test in detection.csv (default 0.001)")
    p.add_argument("--other-cells", default=None,
                   help="other-cells calibration of RNA models (default: other_cells.json in the models' folder, written by "
                        "rule calibrate_other_cells): qc.csv gets other_cells and its interval, flag cells_outside_reference")
    p.add_argument("--absolute", action="store_true",
                   help="RNA: write absolute fractions to --out: the reference's types x (1 - other cells) and an "
                        "`other cells` column, summing to 1 (config key `other_cells.absolute_fractions`)")
    p.add_argument("--no-adapt", action="store_true",
                   help="do not adapt the learned model (hpvade) to the bulk's genes and platform (config `deconvolution.adapt`)")
    p.add_argument("--adapt-min-samples", type=int, default=3,
                   help="fewer samples: adapt to the bulk's genes only, no per-gene platform factors (default 3)")
    p.add_argument("--mixtures", default=None,
                   help="training mixtures the model is adapted with (default: ../../pseudobulk/train.h5 from --model)")
    p.set_defaults(func=_deconvolve)
    p = sub.add_parser("monitor", help="print the latest epochs of a training_log.csv")
    p.add_argument("history", help="results/{dataset}/models/{model}/training_log.csv")
    p.add_argument("--last", type=int, default=10, help="number of epochs to show")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes with --watch")
    p.set_defaults(func=_monitor)
    p = sub.add_parser("info", help="print a checkpoint's provenance (config, versions, data checksums)")
    p.add_argument("checkpoint")
    p.set_defaults(func=_info)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with fixed_threads():  # the rule's bytes at any core count (deconflow.threads)
            args.func(args)
    except DeconflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
