"""Bulk RNA-seq files as quantifiers write them, read into one genes x samples table.

Formats (``format``; detected from the content when not given):

``table``
    genes x samples TSV/CSV(.gz), first column the gene (:func:`read_bulk`);
``h5ad``
    samples x genes AnnData;
``featurecounts``
    featureCounts output: ``#`` comment line(s), then ``Geneid Chr Start End Strand Length`` and
    one count column per BAM; samples are named after the BAM file without folder and extension;
``salmon``
    salmon ``quant.sf`` / ``quant.genes.sf`` (``Name Length EffectiveLength TPM NumReads``), one
    file per sample, named after the folder holding it (or the file's own name when it is not
    ``quant*.sf``). Transcript-level files are summed to genes through GENCODE-style names
    (``ENST...|ENSG...|...``) or a ``tx2gene`` table;
``rsem``
    RSEM ``*.genes.results`` (``gene_id transcript_id(s) length effective_length expected_count
    TPM FPKM``), one file per sample named after the file without ``.genes.results``.

``nfcore``
    nf-core/rnaseq merged tables (``salmon.merged.gene_counts.tsv``, ``..._tpm.tsv``,
    ``rsem.merged.gene_counts.tsv``): ``gene_id``, ``gene_name`` (or ``transcript_id(s)``), then
    one column per sample; ``gene_name`` is used to match a symbol reference;
``kallisto``
    kallisto ``abundance.tsv`` (``target_id length eff_length est_counts tpm``) or
    ``abundance.h5``, one per sample named after its folder; transcripts summed to genes as for
    salmon (the h5 stores no TPM: it is computed as kallisto does, est_counts / eff_length scaled to
    1e6);
``htseq``
    htseq-count output: no header, ``gene<TAB>count`` (one column per BAM), ending with the
    ``__no_feature``, ``__ambiguous``, ... summary rows, which are dropped; one sample per file,
    named after the file (``S1.counts.txt`` -> ``S1``);
``star``
    STAR ``ReadsPerGene.out.tab``: its 4 ``N_unmapped``, ``N_multimapping``, ``N_noFeature``,
    ``N_ambiguous`` rows are dropped; of its three count columns (unstranded, read 1 on the gene's
    strand, read 2 on it) ``strand`` picks ``unstranded``, ``forward`` or ``reverse``; unset, the
    column with the most counts is taken and logged (an unstranded library puts about half its
    reads in each stranded column, a stranded one nearly all in one). Named after the file prefix
    (``S1_ReadsPerGene.out.tab`` -> ``S1``) or, without one, its folder.

``quantity`` picks the column of salmon (``counts``: NumReads, ``tpm``: TPM), kallisto
(est_counts, tpm) and RSEM (``counts``: expected_count, ``tpm``: TPM) files. Values stay linear; ``deconflow.deconvolve``
turns them into CPM over the genes shared with the model, as for a plain table.
"""

from __future__ import annotations

import glob
import gzip
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DeconflowError
from .files import _check_finite, _check_unique, check_feature_ids
from .genes import ENSEMBL_GENE, ENSEMBL_TRANSCRIPT, strip_version
from .tables import (CPG_INDEX_COLUMNS, container_of, head_lines, looks_like_id_header, non_numeric_columns, read_table, region_columns,
                     region_ids, to_numbers)

log = logging.getLogger(__name__)

BULK_FIX = "give a features x samples table with a header row: feature ids in the first column, one numeric column per sample"


def read_bulk_table(path, allow_missing: bool = False) -> pd.DataFrame:
    """A features x samples text table (float64) through ``deconflow.io.tables``: separator, quotes,
    header and decimal commas from the content. A file whose first row is numbers has no header:
    its one sample column is named after the file (``S1.counts.txt`` -> ``S1``), several after the
    file and their position (``S1_1``, ``S1_2``); this is logged."""
    path = Path(path)
    frame = read_table(path, "bulk", BULK_FIX, header=None)
    has_header = frame.attrs["has_header"]
    if frame.shape[0] == 0:
        raise DeconflowError(path, "bulk file has no data rows", BULK_FIX)
    if has_header and frame.shape[1] > 2 and str(frame.columns[1]).strip().lower() == "description" \
            and str(frame.columns[0]).strip().lower() == "name":  # GCT: Name, Description, samples
        frame = frame.drop(columns=frame.columns[1])
    regions = region_columns(frame.columns[:3]) if has_header else None
    if regions is not None:  # chr, start, end (+ wgbstools startCpG, endCpG): one region id per row
        ids = region_ids(frame, regions, "bulk region table", "give integer start and end positions")
        dropped = [c for c in frame.columns if str(c).strip().lower() in CPG_INDEX_COLUMNS]
        frame = frame.drop(columns=[c for c in frame.columns if c in regions or c in dropped])
        frame.insert(0, "region", ids.to_numpy())
        log.info("%s: region table: columns %s read as region ids chr:start-end%s", path, ", ".join(regions),
                 f"; {', '.join(dropped)} (CpG indices) left out" if dropped else "")
    if has_header:
        _check_unique(frame.columns[1:], "sample ids", path, "give every sample column a unique name")
        non_numeric = non_numeric_columns(frame, frame.columns[1:])
        if non_numeric:
            raise DeconflowError(path, f"non-numeric sample columns {non_numeric[:5]}",
                                 "keep only the feature id as the first column and numeric values in the others")
    if has_header and frame.shape[1] > 2 and _is_entrez_column(frame.columns[1]) and not _is_entrez_column(frame.columns[0]):
        # cBioPortal / TCGA: Hugo_Symbol, Entrez_Gene_Id, then the samples: the ids are not a sample
        log.info("%s: column %r holds a second gene id (Entrez), not a sample: left out", path, frame.columns[1])
        frame = frame.drop(columns=frame.columns[1])
    df = to_numbers(frame, frame.columns[1:], "bulk", BULK_FIX, allow_missing=True)  # NaN: named by _check_finite
    df.index = pd.Index(frame.iloc[:, 0].to_numpy(), dtype=str)
    if has_header:
        df.columns = [str(c) for c in frame.columns[1:]]
    else:
        stem = file_stem(path)
        df.columns = [stem] if df.shape[1] == 1 else [f"{stem}_{k}" for k in range(1, df.shape[1] + 1)]
        first = "\t".join(frame.iloc[0, :4].tolist())
        log.warning("%s: first line `%s` read as data (a gene and its values: no header row); sample column(s) named %s "
                    "after the file; if the numbers are sample names, put `gene` as the first field of that line",
                    path, first, ", ".join(df.columns[:5]))
    df.attrs.update(frame.attrs)
    return df


def _is_entrez_column(name) -> bool:
    """``Entrez_Gene_Id``, ``entrez_id``, ``EntrezID``, ``NCBI_gene_id``: a second gene-id column."""
    words = {w.lower() for w in re.split(r"[_.\-\s]+|(?<=[a-z])(?=[A-Z])", str(name)) if w}
    return bool(words & {"entrez", "ncbi"}) and looks_like_id_header(str(name))


def file_stem(path) -> str:
    """``data/S1.counts.txt.gz`` -> ``S1``: the file name up to its first dot."""
    name = Path(path).name
    return name.split(".")[0] or name

def read_bulk(path: str | Path, allow_missing: bool = False) -> pd.DataFrame:
    """Read a bulk matrix (features x samples) from TSV/CSV (optionally .gz) or h5ad.

    For h5ad, samples are observations (rows) as in AnnData, and the result is transposed
    to features x samples. ``allow_missing`` accepts NaN (uncovered methylation regions).
    """
    path = Path(path)
    if not path.exists():
        raise DeconflowError(path, "bulk file does not exist", "check `bulk` in the dataset config")
    if path.stat().st_size == 0:
        raise DeconflowError(path, "bulk file is empty", "give a features x samples table with a header row")
    name = path.name.lower()
    if _hdf5_kind(path) == "h5ad" or (name.endswith(".h5ad") and container_of(path) == "hdf5"):
        import anndata as ad

        try:
            adata = ad.read_h5ad(path)
        except Exception as exc:
            raise DeconflowError(
                path,
                f"cannot be read as h5ad ({type(exc).__name__}: {exc})",
                "the file is truncated or corrupt; re-export it (samples x features AnnData)",
            ) from None
        df = _h5ad_linear_values(adata, path)
    else:
        df = read_bulk_table(path, allow_missing=allow_missing)
    df.index = df.index.astype(str)
    df.columns = df.columns.astype(str)
    check_feature_ids(df.index, path)
    _check_unique(df.columns, "sample ids", path, "give every sample column a unique name")
    values = df.to_numpy(dtype=np.float64)
    if allow_missing:  # methylation: uncovered regions are NaN; inf is still an error
        values = values[~np.isnan(values)]
    _check_finite(values, path, "the bulk matrix")
    out = df.astype(np.float64)
    out.attrs.update(df.attrs)
    return out


#: layers of a bulk h5ad that hold linear values (counts), tried in this order when ``.X`` is log-scaled
COUNTS_LAYERS = ("counts", "raw_counts", "count", "umi_counts", "X_counts", "expected_count", "tpm", "TPM")
#: values of a log-scaled matrix stay below this (log1p of a million is 13.8); the same bound as
#: ``deconflow.normalize.LOG_SCALE_MAX`` (io does not import above itself)
_LOG_MAX = 50.0


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def _log_scaled(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size > 0 and (finite.min() < 0 or finite.max() <= _LOG_MAX)


def _h5ad_linear_values(adata, path: Path) -> pd.DataFrame:
    """Genes x samples from a samples x genes AnnData, in linear space, as the file says: ``.X``
    when it is linear; when ``.X`` is log-scaled (negative values, or max ≤ 50), a counts layer (``COUNTS_LAYERS``), then ``.raw.X``; which one is logged.
    Only log values: an error naming the base the file records (``uns['log1p']['base']``; none
    recorded = natural log, scanpy's default) or saying that it records none. The file's second gene
    identifier (a ``.var`` column of the other kind, e.g. ``gene_ids`` beside symbols) is kept in
    ``attrs["gene_names"]``."""
    from .genes import GENE_COLUMN_CANDIDATES, identifier_kind

    X = _dense(adata.X).astype(np.float64)
    var_names = adata.var_names.astype(str)
    var = adata.var
    recorded = "log1p" in adata.uns
    used = ".X"
    if _log_scaled(X):  # the values decide (scanpy keeps uns['log1p'] after .X is set back to counts)
        layer = next((name for name in COUNTS_LAYERS if name in adata.layers), None)
        if layer is not None:
            X, used = _dense(adata.layers[layer]).astype(np.float64), f"layers[{layer!r}]"
        elif adata.raw is not None:
            X, used = _dense(adata.raw.X).astype(np.float64), ".raw.X"
            var_names, var = adata.raw.var_names.astype(str), adata.raw.var
        why = "negative values or max ≤ 50" + ("; scanpy's log1p recorded in .uns" if recorded else "")
        if used == ".X":
            if recorded:
                base = (adata.uns["log1p"] or {}).get("base") if isinstance(adata.uns["log1p"], dict) else None
                undo = "np.expm1(adata.X)" if base is None else f"{base}**adata.X - 1"
                told = f"the file records log1p with base {base if base is not None else 'e (natural log)'}"
            else:
                undo, told = None, "the file records no log base"
            fix = ("store the counts in the file (adata.layers['counts'] = counts before normalising, or adata.raw) "
                   + (f"or give {undo} as .X" if undo else "or undo the log with the base it was made with (the file does not say which)"))
            raise DeconflowError(path, f"bulk .X looks log-transformed ({why}; {told}) and the file has no counts layer "
                                       f"({', '.join(COUNTS_LAYERS[:3])}...) or .raw", fix)
        log.info("%s: .X is log-transformed (%s); using the linear values of %s", path, why, used)
    df = pd.DataFrame(X.T, index=var_names, columns=adata.obs_names.astype(str))
    column = next((c for c in GENE_COLUMN_CANDIDATES if c in var.columns), None)
    if column is not None:
        second = var[column].astype(str)
        kinds = identifier_kind(var_names[:2000]), identifier_kind(second[:2000])
        if kinds[0] != kinds[1]:
            df.attrs["gene_names"] = dict(zip(var_names, second))
            log.info("%s: .var column %r (%s) kept as a second gene identifier", path, column, kinds[1])
    return df


FORMATS = ("table", "h5ad", "featurecounts", "nfcore", "salmon", "kallisto", "rsem", "htseq", "star")
QUANTITIES = ("counts", "tpm")
STRANDS = ("unstranded", "forward", "reverse")
PER_SAMPLE_FORMATS = ("salmon", "kallisto", "rsem")
KALLISTO_COLUMNS = ["target_id", "length", "eff_length", "est_counts", "tpm"]
KALLISTO_NAMES = ("abundance.tsv", "abundance.h5")
STAR_SUFFIX = "ReadsPerGene.out.tab"
STAR_SUMMARY_ROWS = ("N_unmapped", "N_multimapping", "N_noFeature", "N_ambiguous")
HTSEQ_SUMMARY_PREFIX = "__"
NFCORE_SECOND_COLUMNS = ("gene_name", "transcript_id(s)")

FEATURECOUNTS_COLUMNS = ["Geneid", "Chr", "Start", "End", "Strand", "Length"]
SALMON_COLUMNS = ["Name", "Length", "EffectiveLength", "TPM", "NumReads"]
RSEM_COLUMNS = ["gene_id", "transcript_id(s)", "length", "effective_length", "expected_count", "TPM", "FPKM"]
VALUE_COLUMN = {("salmon", "counts"): "NumReads", ("salmon", "tpm"): "TPM", ("rsem", "counts"): "expected_count", ("rsem", "tpm"): "TPM",
                ("kallisto", "counts"): "est_counts", ("kallisto", "tpm"): "tpm"}
SALMON_NAMES = ("quant.sf", "quant.genes.sf")
RSEM_SUFFIX = ".genes.results"


# --------------------------------------------------------------------------- paths
def expand_bulk_paths(path_setting, key: str = "bulk") -> list[str]:
    """A bulk ``path`` setting (RNA files or methylation calls) as a list of files, in order.

    ``path_setting``: one path, a glob, or a list of them; a path that exists is taken as it is
    (even with ``[``, ``*`` or ``?`` in its name), the others as globs, sorted. A folder stands for
    its per-sample files: ``<folder>/*/quant.genes.sf`` (else ``*/quant.sf``) for salmon,
    ``*.genes.results`` for RSEM, or the folder's own ``quant.genes.sf``/``quant.sf``. A glob that
    matches nothing is an error naming it and ``key``; a missing file and a folder without such
    files are kept as given (the reader then names them).
    """
    settings = [path_setting] if isinstance(path_setting, (str, Path)) else list(path_setting)
    if not settings:
        raise DeconflowError(None, f"`{key}` names no file", f"give a path, a glob or a list of paths as `{key}`")
    files: list[str] = []
    for setting in map(str, settings):
        # a path that exists is taken literally, before it is tried as a glob (`S[1].tsv`)
        literal = Path(setting).exists() or not glob.has_magic(setting)
        matches = [setting] if literal else sorted(glob.glob(setting))
        if not matches:
            raise DeconflowError(setting, "the pattern matches no file", f"check the path or pattern given as `{key}`")
        for match in matches:
            files.extend(_folder_members(Path(match)) if Path(match).is_dir() else [match])
    return list(dict.fromkeys(files))


def _folder_members(folder: Path) -> list[str]:
    for pattern in ("quant.genes.sf", "quant.sf", "*/quant.genes.sf", "*/quant.sf", f"*{RSEM_SUFFIX}", "abundance.h5",
                    "abundance.tsv", "*/abundance.h5", "*/abundance.tsv", f"*{STAR_SUFFIX}", f"*/*{STAR_SUFFIX}"):
        found = sorted(str(p) for p in folder.glob(pattern))
        if found:
            return found
    return [str(folder)]


# --------------------------------------------------------------------------- detection
def _head_lines(path: Path, n: int = 30) -> list[str]:
    return head_lines(path, n)


def _hdf5_kind(path: Path) -> str | None:
    """``h5ad`` or ``kallisto`` for an HDF5 file (by its groups: AnnData's ``X``/``obs``,
    kallisto's ``aux``), None for anything else."""
    try:
        if container_of(path) != "hdf5":
            return None
    except OSError:
        return None
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            keys = set(h5.keys())
    except OSError:
        return None
    if "aux" in keys:
        return "kallisto"
    return "h5ad" if keys & {"X", "obs", "var"} else None


def detect_format(path) -> str:
    """The format of one bulk file from its content: HDF5 groups (AnnData, kallisto's
    ``abundance.h5``), else its first lines (unpacked whatever the container, see
    ``deconflow.io.tables.open_binary``)."""
    path = Path(path)
    hdf5 = _hdf5_kind(path)
    if hdf5:
        return hdf5
    if path.name.lower().endswith(".h5ad"):
        return "h5ad"
    if path.name.lower().endswith(".h5"):
        return "kallisto"
    lines = _head_lines(path)
    if any(line.startswith("# Program:featureCounts") for line in lines[:3]):
        return "featurecounts"
    header = next((line for line in lines if line and not line.startswith("#")), "")
    fields = header.split("\t")
    if fields[:6] == FEATURECOUNTS_COLUMNS:
        return "featurecounts"
    if fields[:5] == SALMON_COLUMNS:
        return "salmon"
    if fields[:5] == KALLISTO_COLUMNS:
        return "kallisto"
    if fields[:5] == RSEM_COLUMNS[:5]:
        return "rsem"
    if fields[0] == "gene_id" and len(fields) > 2 and fields[1] in NFCORE_SECOND_COLUMNS:
        return "nfcore"
    if fields[0] in STAR_SUMMARY_ROWS and len(fields) == 4:
        return "star"
    rest = fields[1:]
    if (rest and all(f.strip().isdigit() for f in rest) and not fields[0].strip().lstrip("-").isdigit()
            and not looks_like_id_header(fields[0])):
        return "htseq"  # no header: a gene id, then integer counts
    return "table"


# --------------------------------------------------------------------------- readers
def _read_tsv(path: Path, what: str, fix: str, comment: str | None = None) -> pd.DataFrame:
    """A quantifier's table as strings, with a header row (``deconflow.io.tables``)."""
    return read_table(path, f"{what} file", fix, header=True, comment=comment)


def _numeric(frame: pd.DataFrame, columns, path: Path, what: str, fix: str) -> pd.DataFrame:
    """``columns`` of a string table as float64 (errors name the line of a non-number)."""
    return to_numbers(frame, columns, what, fix)


def sample_name_from_bam(column: str) -> str:
    """``/data/run1/S1.sorted.bam`` -> ``S1.sorted``: the file name without folder and extension."""
    name = Path(str(column)).name
    for extension in (".bam", ".sam", ".cram"):
        if name.lower().endswith(extension):
            return name[: -len(extension)]
    return name


def read_featurecounts(path) -> pd.DataFrame:
    path = Path(path)
    fix = "give featureCounts' output as written: a `#` comment line, the header `Geneid Chr Start End Strand Length` and one count column per BAM"
    frame = _read_tsv(path, "featureCounts", fix, comment="#")
    if list(frame.columns[:6]) != FEATURECOUNTS_COLUMNS:
        raise DeconflowError(path, f"not a featureCounts table (header starts {list(frame.columns[:6])})", fix)
    count_columns = list(frame.columns[6:])
    if not count_columns:
        raise DeconflowError(path, "featureCounts table has no count columns (only Geneid Chr Start End Strand Length)",
                             "run featureCounts with at least one BAM file and give its main output (not the .summary)")
    if frame.empty:
        raise DeconflowError(path, "featureCounts table has no gene rows", fix)
    values = _numeric(frame, count_columns, path, "featureCounts table", "keep featureCounts' output unchanged (counts are integers)")
    samples = [sample_name_from_bam(c) for c in count_columns]
    _check_unique(samples, "sample names (BAM file names without folder and extension)", path, "give the BAM files distinct names")
    counts = values.set_axis(samples, axis=1)
    counts.index = frame["Geneid"].astype(str)
    return counts


def _sample_name_of_per_sample_file(path: Path, fmt: str) -> str:
    if fmt == "salmon" and path.name in SALMON_NAMES:
        return path.parent.name or path.name
    if fmt == "kallisto" and path.name in KALLISTO_NAMES:
        return path.parent.resolve().name or path.name
    if fmt == "star" and path.name.endswith(STAR_SUFFIX):
        prefix = path.name[: -len(STAR_SUFFIX)].rstrip("._-")
        return prefix or path.parent.resolve().name
    if fmt == "rsem" and path.name.endswith(RSEM_SUFFIX):
        return path.name[: -len(RSEM_SUFFIX)]
    return path.name.split(".")[0]


def read_tx2gene(path) -> dict[str, str]:
    """Transcript -> gene table (TSV/CSV, two columns, no versions needed)."""
    path = Path(path)
    fix = "give `tx2gene` as a TSV/CSV with two columns: transcript ID, gene ID (or symbol)"
    table = read_table(path, "tx2gene table", fix, header=False, comment="#")
    return {strip_version(t): g for t, g in zip(table.iloc[:, 0], table.iloc[:, 1])}


def _salmon_genes(names: pd.Index, path: Path, tx2gene: dict | None) -> pd.Index:
    """Gene of each salmon row: the name itself (gene-level file), the ENSG field of a GENCODE-style
    transcript name, or the tx2gene table."""
    first = names[0]
    if "|" in first:  # GENCODE transcript FASTA header: ENST|ENSG|OTTHUMG|OTTHUMT|tx name|gene name|length|biotype|
        genes = [n.split("|")[1] if n.count("|") >= 1 else "" for n in names]
        if not all(ENSEMBL_GENE.match(g) for g in genes):
            raise DeconflowError(path, "transcript names with `|` but without an Ensembl gene ID in the second field",
                                 "give salmon's quant.genes.sf, or `tx2gene`")
        return pd.Index(genes)
    is_transcript = sum(bool(ENSEMBL_TRANSCRIPT.match(n)) for n in names) >= 0.5 * len(names)
    if not is_transcript:
        return names
    if tx2gene is None:
        raise DeconflowError(path, "salmon file holds transcripts (ENST...), not genes",
                             "give salmon's quant.genes.sf (salmon -g), or set `tx2gene` to a transcript -> gene table")
    genes = [tx2gene.get(strip_version(n)) for n in names]
    n_missing = sum(g is None for g in genes)
    if n_missing > 0.5 * len(genes):
        raise DeconflowError(path, f"{n_missing} of {len(genes)} transcripts are not in the tx2gene table",
                             "use the tx2gene table of the annotation salmon was run with")
    return pd.Index([g if g is not None else "" for g in genes])


def read_per_sample(path, fmt: str, quantity: str, tx2gene: dict | None = None) -> pd.DataFrame:
    """One salmon, kallisto or RSEM file as a genes x 1 table (transcripts summed to genes)."""
    path = Path(path)
    if fmt == "kallisto" and path.name.lower().endswith(".h5"):
        names, values = _read_kallisto_h5(path, quantity)
    else:
        expected = {"salmon": SALMON_COLUMNS, "rsem": RSEM_COLUMNS, "kallisto": KALLISTO_COLUMNS}[fmt]
        fix = f"give the {fmt} output as written (header {' '.join(expected[:5])} ...)"
        frame = _read_tsv(path, fmt, fix)
        missing = [c for c in expected[:5] if c not in frame.columns]
        if missing:
            raise DeconflowError(path, f"not a {fmt} file: columns {missing} are missing (header {list(frame.columns)[:7]})", fix)
        if frame.empty:
            raise DeconflowError(path, f"{fmt} file has no rows", fix)
        column = VALUE_COLUMN[(fmt, quantity)]
        values = _numeric(frame, [column], path, f"{fmt} file", f"keep the {fmt} output unchanged")[column].to_numpy()
        names = pd.Index(frame[expected[0]].astype(str))
    genes = _salmon_genes(names, path, tx2gene) if fmt in ("salmon", "kallisto") else names
    series = pd.Series(np.asarray(values, dtype=np.float64), index=genes)
    series = series[series.index != ""]
    if not series.index.is_unique:  # transcripts -> genes
        series = series.groupby(level=0, sort=False).sum()
    return series.to_frame(_sample_name_of_per_sample_file(path, fmt))


def _read_kallisto_h5(path: Path, quantity: str) -> tuple[pd.Index, np.ndarray]:
    """Target ids and est_counts (or TPM = est_counts / eff_length scaled to 1e6) of abundance.h5."""
    import h5py

    fix = "give kallisto's abundance.h5 (or abundance.tsv) as written by `kallisto quant`"
    try:
        with h5py.File(path, "r") as h5:
            ids = h5["aux/ids"].asstr()[()]
            counts = h5["est_counts"][()].astype(np.float64)
            eff_lengths = h5["aux/eff_lengths"][()].astype(np.float64)
    except (OSError, KeyError) as exc:
        raise DeconflowError(path, f"not a kallisto abundance.h5 ({type(exc).__name__}: {exc})", fix) from None
    if quantity == "counts":
        return pd.Index(ids), counts
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(eff_lengths > 0, counts / eff_lengths, 0.0)
    return pd.Index(ids), rate / rate.sum() * 1e6


def read_nfcore(path) -> pd.DataFrame:
    """An nf-core/rnaseq merged table: gene_id, gene_name (or transcript_id(s)), samples. The
    gene names are kept in ``attrs["gene_names"]`` (gene_id -> gene_name) for matching."""
    path = Path(path)
    fix = "give the nf-core/rnaseq merged table as written (gene_id, gene_name, then one column per sample)"
    frame = _read_tsv(path, "nf-core merged", fix)
    samples = list(frame.columns[2:])
    _check_unique(samples, "sample ids", path, "give every sample column a unique name")
    values = _numeric(frame, samples, path, "nf-core merged table", fix)
    values.index = pd.Index(frame["gene_id"].to_numpy(), dtype=str)
    if frame.columns[1] == "gene_name":
        values.attrs["gene_names"] = dict(zip(values.index, frame["gene_name"].astype(str)))
    return values


def read_htseq(path) -> pd.DataFrame:
    """htseq-count output (no header; gene, then one count column per BAM); the ``__`` summary rows
    are dropped and logged. One column: named after the file; several: ``<file>_1``, ``<file>_2``..."""
    path = Path(path)
    fix = "give htseq-count's output as written: gene<TAB>count lines, ending with the __no_feature ... rows"
    frame = read_table(path, "htseq-count file", fix, header=False)
    ids = frame.iloc[:, 0].astype(str)
    summary = ids.str.startswith(HTSEQ_SUMMARY_PREFIX).to_numpy()
    values = _numeric(frame, frame.columns[1:], path, "htseq-count file", fix)
    kept = values.loc[~summary]
    kept.index = pd.Index(ids[~summary].to_numpy(), dtype=str)
    stem = file_stem(path)
    kept.columns = [stem] if kept.shape[1] == 1 else [f"{stem}_{k}" for k in range(1, kept.shape[1] + 1)]
    if summary.any():
        log.info("%s: htseq-count, %d summary rows dropped (%s)", path, int(summary.sum()), ", ".join(ids[summary][:5]))
    return kept


def read_star(path, strand: str | None = None) -> pd.DataFrame:
    """STAR ReadsPerGene.out.tab: the N_ rows dropped, one strandedness column (see module doc)."""
    path = Path(path)
    fix = "give STAR's ReadsPerGene.out.tab as written (4 N_ rows, then gene, unstranded, forward, reverse counts)"
    if strand is not None and strand not in STRANDS:
        raise DeconflowError(path, f"unknown strand {strand!r}", f"use one of {list(STRANDS)} or leave `strand` unset")
    frame = read_table(path, "STAR ReadsPerGene file", fix, header=False)
    if frame.shape[1] != 4:
        raise DeconflowError(path, f"has {frame.shape[1]} columns, STAR's ReadsPerGene.out.tab has 4", fix)
    ids = frame.iloc[:, 0].astype(str)
    summary = ids.isin(STAR_SUMMARY_ROWS).to_numpy()
    values = _numeric(frame, frame.columns[1:], path, "STAR ReadsPerGene file", fix).loc[~summary]
    values.columns = list(STRANDS)
    values.index = pd.Index(ids[~summary].to_numpy(), dtype=str)
    totals = values.sum(axis=0)
    chosen = strand or str(totals.idxmax())
    log.info("%s: STAR ReadsPerGene, %d summary rows dropped; strand column %s (%s counts: %s)%s", path, int(summary.sum()), chosen,
             "assigned", ", ".join(f"{k} {int(v)}" for k, v in totals.items()),
             "" if strand else "; the one with most counts, set `strand` to choose")
    return values[[chosen]].set_axis([_sample_name_of_per_sample_file(path, "star")], axis=1)


def read_rna_bulk(paths, bulk_format: str | None = None, quantity: str = "counts", tx2gene=None,
                  strand: str | None = None) -> tuple[pd.DataFrame, str]:
    """One genes x samples table (float64, linear) from one or several bulk files.

    ``paths``: a path, a glob, a folder or a list (see :func:`expand_bulk_paths`); every file has
    the same format (``bulk_format`` or detected); several files must list the same genes and are
    joined column-wise. ``strand`` is for STAR files. Returns ``(table, format)``.
    """
    files = expand_bulk_paths(paths)
    if quantity not in QUANTITIES:
        raise DeconflowError(files[0], f"unknown quantity {quantity!r}", f"use one of {list(QUANTITIES)}")
    if bulk_format is not None and bulk_format not in FORMATS:
        raise DeconflowError(files[0], f"unknown bulk format {bulk_format!r}", f"use one of {list(FORMATS)} or leave `format` unset")
    for file in files:
        path = Path(file)
        if not path.exists():
            raise DeconflowError(path, "bulk file does not exist", "check `bulk` in the dataset config (or --bulk)")
        if path.is_dir():
            raise DeconflowError(path, "folder holds no quant.sf, quant.genes.sf, */quant.sf or *.genes.results files",
                                 "give the bulk files themselves, a glob, or a folder of salmon sample folders / RSEM results")
        if path.stat().st_size == 0:
            raise DeconflowError(path, "bulk file is empty", "give a features x samples table with a header row")
    formats = {file: bulk_format or detect_format(file) for file in files}
    kinds = sorted(set(formats.values()))
    if len(kinds) > 1:
        raise DeconflowError(files[0], f"bulk files have different formats ({', '.join(f'{Path(f).name}: {k}' for f, k in formats.items())})",
                             "give files of one format per bulk entry")
    fmt = kinds[0]
    if quantity == "tpm" and fmt in ("featurecounts", "htseq", "star"):
        tool = {"featurecounts": "featureCounts", "htseq": "htseq-count", "star": "STAR ReadsPerGene"}[fmt]
        raise DeconflowError(files[0], f"{tool} gives read counts, not TPM", "set `quantity: counts` (or leave it unset)")
    tx2gene_map = read_tx2gene(tx2gene) if tx2gene else None
    tables = []
    for file in files:
        if fmt in ("table", "h5ad"):
            tables.append(read_bulk(file))
        elif fmt == "featurecounts":
            tables.append(read_featurecounts(file))
        elif fmt == "nfcore":
            tables.append(read_nfcore(file))
        elif fmt == "htseq":
            tables.append(read_htseq(file))
        elif fmt == "star":
            tables.append(read_star(file, strand))
        else:
            tables.append(read_per_sample(file, fmt, quantity, tx2gene_map))
    combined = tables[0]
    gene_names = combined.attrs.get("gene_names")
    for file, table in zip(files[1:], tables[1:]):
        if not table.index.sort_values().equals(combined.index.sort_values()):
            n_differ = len(table.index.symmetric_difference(combined.index))
            raise DeconflowError(file, f"lists other genes than {files[0]} ({n_differ} differ)",
                                 "quantify every sample against the same annotation")
        combined = pd.concat([combined, table.loc[combined.index]], axis=1)
    source = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)"
    _check_unique(combined.columns, "sample ids", source, "give every sample its own folder or file name")
    check_feature_ids(combined.index, source)
    values = combined.to_numpy(dtype=np.float64)
    _check_finite(values, source, "the bulk matrix")
    combined = combined.astype(np.float64)
    combined.index = combined.index.astype(str)
    combined.columns = combined.columns.astype(str)
    log.info("bulk %s: format %s%s, %d genes x %d samples", source, fmt,
             f" ({VALUE_COLUMN[(fmt, quantity)]})" if fmt in PER_SAMPLE_FORMATS else "", *combined.shape)
    if gene_names:
        combined.attrs["gene_names"] = gene_names
    return combined, fmt
