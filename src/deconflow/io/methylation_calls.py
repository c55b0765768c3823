"""Per-sample methylation calls (Bismark, MethylDackel) aggregated into atlas regions.

Accepted files, one per sample (the sample id is the file name without its format suffix):

``bismark``
    ``bismark_methylation_extractor`` coverage file ``*.cov`` / ``*.cov.gz``: tab-separated, no
    header, ``chrom, start, end, percent methylated, count methylated, count unmethylated``;
    **1-based** positions (``start`` is the C of the CpG; ``end`` = ``start``, or ``start + 1``
    for strand-merged CpGs from ``coverage2cytosine --merge_CpG``).
``methyldackel``
    ``MethylDackel extract`` bedGraph ``*_CpG.bedGraph`` (optionally ``.gz``): an optional
    ``track`` line, then ``chrom, start, end, percent, count methylated, count unmethylated``;
    **0-based** half-open positions (BED). Any bedGraph with these six columns reads the same.

Auto-detection is by file name (``.cov`` → bismark; ``.bedGraph``/``.bedgraph``/``.bg`` →
methyldackel) or, failing that, by a leading ``track`` line; ``format`` in the bulk entry (or
``deconflow deconvolve --format``) overrides it.

Coordinate convention
    Atlas regions (``chr:start-end`` ids, or ``chr``/``start``/``end`` columns) are BED
    intervals: 0-based start inclusive, end exclusive, as in the wgbs_tools / UXM marker files
    the embedded Loyfer atlas comes from. A call belongs to a region when the 0-based position
    of its first base (Bismark ``start - 1``, bedGraph ``start``) satisfies
    ``region start ≤ position < region end``, i.e. 1-based positions ``start + 1 … end``. The
    minus-strand call of a CpG (one base right of its C) falls in the same region unless the
    region ends between the C and the G.

Aggregation is vectorised: per chromosome the calls are sorted by position once, prefix sums of
methylated and total reads are taken, and each region's sums are the difference of the prefix
sums at ``np.searchsorted`` of its two ends (overlapping regions are fine). The result is, per
atlas region and sample, the methylated and the total read count; regions without reads have
total 0 (their fraction is NaN, and read-aware models drop them).

The embedded atlas uses **hg38** coordinates (2,839 of its 7,693 regions equal a marker of the
UXM ``Markers.U250.hg38.tsv`` exactly, 32 one of ``Markers.U250.hg19.tsv``); the genome build of
the sample files is the user's responsibility. Files whose chromosome names match none of the
atlas's (``1`` vs ``chr1``) are refused with the fix.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DeconflowError
from .files import atomic_path
from .tables import head_lines, pandas_compression

log = logging.getLogger(__name__)

FORMATS = ("bismark", "methyldackel", "modkit", "bedmethyl", "cytosine_report", "region_counts")
#: name suffix (lower case, without .gz) -> format
SUFFIX_FORMATS = {".cov": "bismark", ".bedgraph": "methyldackel", ".bg": "methyldackel"}
#: Bismark's own name for coverage files written with --zero_based (0-based start, BED-like)
ZERO_BASED_SUFFIX = ".zero.cov"
#: modkit pileup's modification codes of cytosine (5mC, 5hmC, any C mod) and their ChEBI numbers
MODKIT_C_CODES = {"m", "h", "C", "76792", "76794"}
LAYOUT_NAMES = {"modkit": "modkit pileup bedMethyl (mod codes m/h, N_valid_cov, N_mod)",
                "bedmethyl": "ENCODE bedMethyl (11 columns: ..., colour, coverage, percent methylated)",
                "cytosine_report": "Bismark coverage2cytosine / MethylDackel cytosine report (7 columns)",
                "region_counts": "region table with read counts (chr, start, end, total/modified calls)"}
#: region-table read-count columns: (methylated, total or unmethylated, which) pairs, lower case
REGION_COUNT_COLUMNS = ((("modified_calls", "methylated_calls", "methylated", "meth", "n_mod", "mod_calls", "called_sites_methylated"), "methylated"),
                       (("total_calls", "total", "coverage", "n_valid_cov", "calls", "depth", "called_sites"), "total"),
                       (("unmodified_calls", "unmethylated_calls", "unmethylated", "unmeth", "canonical_calls"), "unmethylated"))
#: tool-added name parts stripped from sample ids (``s1.bismark.cov.gz`` / ``s1_CpG.bedGraph`` -> ``s1``)
TOOL_SUFFIXES = (".bismark", "_bismark_bt2", "_bismark_hisat2", "_pe", "_se", "_CpG")
COLUMNS = "chrom, start, end, percent methylated, count methylated, count unmethylated"
REGION_ID = re.compile(r"^(?P<chrom>[^:\s]+):(?P<start>\d+)-(?P<end>\d+)$")
#: percent methylated may differ from 100·m/(m+u) by rounding (MethylDackel writes integers)
PERCENT_TOLERANCE = 1.0


@dataclass
class MethylationCalls:
    """One sample's CpG calls: chromosome, 0-based position of the call, read counts."""

    sample_id: str
    chrom: pd.Categorical
    position: np.ndarray  # int64, 0-based
    methylated: np.ndarray  # int64
    total: np.ndarray  # int64
    path: str


# --------------------------------------------------------------------------- files and formats
def _strip_gz(name: str) -> str:
    return name[:-3] if name.lower().endswith(".gz") else name


def _open_first_line(path: Path) -> str:
    return next((line + "\n" for line in head_lines(path, 50) if line.strip()), "")


def _first_lines(path: Path, n: int = 5) -> list[str]:
    lines = [line for line in head_lines(path, n + 50) if line.strip() and not line.startswith("track")]
    return lines[:n]


_COV_FIX = ("give the coverage file bismark_methylation_extractor writes with --bedGraph (<sample>.bismark.cov.gz: "
            "chrom, start, end, percent, methylated, unmethylated), or MethylDackel extract's default <sample>_CpG.bedGraph")


def other_call_layout(lines: list[str]) -> tuple[str, str] | None:
    """(name, fix) when the first lines are of another Bismark / MethylDackel output than the
    coverage file and the default bedGraph; None otherwise."""
    if not lines:
        return None
    if lines[0].startswith("Bismark methylation extractor"):
        return ("Bismark methylation extractor per-read call file (CpG_context_*.txt: read id, strand, chromosome, "
                "position, z/Z)", _COV_FIX)
    fields = lines[0].split("\t")
    if fields[:4] == ["chrBase", "chr", "base", "strand"]:
        return ("methylKit file (MethylDackel extract --methylKit: chrBase, chr, base, strand, coverage, freqC, freqT)",
                "run MethylDackel extract without --methylKit and give its <sample>_CpG.bedGraph")
    rows = [line.split("\t") for line in lines]
    if all(len(r) == 5 and r[1] in ("+", "-") and r[4] in ("z", "Z", "x", "X", "h", "H") for r in rows):
        return ("Bismark methylation extractor per-read call file (read id, strand, chromosome, position, z/Z)", _COV_FIX)
    return None


def _is_int(text: str) -> bool:
    return text.isdigit()


def layout_by_content(lines: list[str]) -> str | None:
    """The call layout of a file's first lines (``track`` lines left out), from the content alone:

    * ``modkit``: ``modkit pileup`` bedMethyl, 18 fields (10 tab-separated with the last 9
      space-separated in modkit ≤ 0.2): chrom, 0-based start, end, a cytosine modification code
      (``m``, ``h``...), score, strand, thick start/end, an RGB colour ``r,g,b``, then counts;
    * ``cytosine_report``: Bismark ``coverage2cytosine`` / MethylDackel ``--cytosine_report``,
      7 fields: chrom, 1-based position, strand, methylated, unmethylated, context, trinucleotide;
    * ``region_counts``: a region table with a header ``chr start end`` and read-count columns
      (nanomix methylome: ``total_calls, modified_calls``);
    * ``bismark``: six fields with ``end == start`` on every line (a Bismark coverage file; a
      bedGraph's end is start + 1);
    * None: anything else (a table, or a six-column file whose convention the content cannot show).
    """
    if not lines:
        return None
    rows = [line.split() for line in lines]
    if all(len(r) == 18 and r[3] in MODKIT_C_CODES and r[5] in ("+", "-", ".") and r[8].count(",") == 2
           and _is_int(r[1]) and _is_int(r[9]) for r in rows):
        return "modkit"
    if all(len(r) == 11 and r[8].count(",") == 2 and r[5] in ("+", "-", ".") and _is_int(r[1]) and _is_int(r[9])
           and r[10].replace(".", "", 1).isdigit() for r in rows):
        return "bedmethyl"
    if all(len(r) == 7 and _is_int(r[1]) and r[2] in ("+", "-") and r[5] in ("CG", "CHG", "CHH") for r in rows):
        return "cytosine_report"
    header = [c.strip().lower() for c in lines[0].split("\t")]
    if region_columns_of(header) and region_count_columns(header):
        return "region_counts"
    if all(len(r) == 6 and _is_int(r[1]) and r[1] == r[2] for r in rows[:5]) and not lines[0].startswith("track"):
        return "bismark"
    return None


def region_columns_of(header: list[str]):
    from .tables import region_columns

    return region_columns(header[:3])


def region_count_columns(header: list[str]) -> dict[str, str]:
    """``{"methylated": column, "total" or "unmethylated": column}`` of a region table's header
    (lower-case names), or {} when it has no read-count pair."""
    found = {}
    for names, role in REGION_COUNT_COLUMNS:
        column = next((c for c in header if c in names), None)
        if column is not None:
            found[role] = column
    if "methylated" in found and ("total" in found or "unmethylated" in found):
        return found
    return {}


def calls_format(path, requested: str | None = None) -> str | None:
    """The methylation-call format of ``path`` (see ``FORMATS``), or None for a plain table.
    ``requested`` (``auto``/None, ``table``, or a format) wins over detection. Detection: the
    content first (:func:`layout_by_content`), then the name (``.cov`` -> bismark, ``.bedGraph``
    -> methyldackel), then a leading ``track`` line (methyldackel)."""
    if requested not in (None, "auto"):
        return None if requested == "table" else requested
    path = Path(path)
    layout = layout_by_content(_first_lines(path))
    if layout in ("modkit", "bedmethyl", "cytosine_report", "region_counts"):
        return layout
    suffix = Path(_strip_gz(path.name)).suffix.lower()
    if suffix in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffix]
    if _open_first_line(path).startswith("track"):
        return "methyldackel"
    return layout


#: name endings of the other layouts, stripped from sample ids
OTHER_SUFFIXES = (".bedmethyl", ".bed", ".cpg_report.txt", ".cx_report.txt", ".txt", ".tsv", ".csv", ".methylome", ".zero")


def sample_id_from_path(path) -> str:
    name = _strip_gz(Path(path).name)
    for ending in (".CpG_report.merged_CpG_evidence.cov", ".CpG_report.txt", ".CX_report.txt", ".methylome.tsv"):
        if name.lower().endswith(ending.lower()) and len(name) > len(ending):
            name = name[: -len(ending)]
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in SUFFIX_FORMATS else name
    for ending in OTHER_SUFFIXES:
        if stem.lower().endswith(ending) and len(stem) > len(ending):
            stem = stem[: -len(ending)]
    for suffix in TOOL_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
    return stem


def read_methylation_calls(path, fmt: str) -> MethylationCalls:
    """Read and check one call file: Bismark ``.cov``, MethylDackel bedGraph, modkit bedMethyl,
    Bismark / MethylDackel cytosine report, or a region read-count table (see module doc)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DeconflowError(path, f"unknown methylation call format {fmt!r}", f"use one of {list(FORMATS)} or `table`")
    if not path.exists():
        raise DeconflowError(path, "methylation call file does not exist", "check `bulk` in the dataset config (or --bulk)")
    if fmt == "modkit":
        return read_modkit(path)
    if fmt == "bedmethyl":
        return read_encode_bedmethyl(path)
    if fmt == "cytosine_report":
        return read_cytosine_report(path)
    if fmt == "region_counts":
        return read_region_counts(path)
    zero_based = fmt == "bismark" and _strip_gz(path.name).lower().endswith(ZERO_BASED_SUFFIX)
    if zero_based:
        log.info("%s: Bismark coverage file named %s: read with 0-based starts (bismark2bedGraph --zero_based), "
                 "as its name says", path, ZERO_BASED_SUFFIX)
    fix_layout = (
        f"give the Bismark coverage file (.cov/.cov.gz from bismark_methylation_extractor --bedGraph) with columns {COLUMNS}"
        if fmt == "bismark"
        else f"give the MethylDackel extract bedGraph with columns {COLUMNS}"
    )
    if not path.exists():
        raise DeconflowError(path, "methylation call file does not exist", "check `bulk` in the dataset config (or --bulk)")
    other = other_call_layout(_first_lines(path))
    if other is not None:
        name, which = other
        raise DeconflowError(path, f"this is a {name}, not the {fmt} {'coverage file' if fmt == 'bismark' else 'bedGraph'} "
                                   f"deconflow reads ({COLUMNS})", which)
    skip = 1 if _open_first_line(path).startswith("track") else 0
    table = _read_calls_table(path, f"{fmt} file", fix_layout, "methylation call", sep="\t", header=None, skiprows=skip,
                              dtype={0: "category"})
    if table.shape[0] == 0:
        raise DeconflowError(path, f"{fmt} file has no calls", fix_layout)
    if table.shape[1] != 6:
        hint = " (a bedGraph without read counts: deconflow needs the counts)" if table.shape[1] == 4 else ""
        layout = layout_by_content(_first_lines(path))
        if layout in ("modkit", "bedmethyl", "cytosine_report", "region_counts"):
            raise DeconflowError(path, f"has {table.shape[1]} columns: a {LAYOUT_NAMES[layout]}, not a {fmt} file",
                                 f"give `--format {layout}` (config `format: {layout}`) or leave the format unset: it is detected")
        raise DeconflowError(path, f"has {table.shape[1]} columns, a {fmt} file has 6{hint}", fix_layout)
    numeric = table.iloc[:, 1:].apply(pd.to_numeric, errors="coerce")
    if numeric.isna().any().any():
        row = int(np.flatnonzero(numeric.isna().any(axis=1).to_numpy())[0])
        raise DeconflowError(path, f"non-numeric value in data row {row + 1} ({table.iloc[row].tolist()})", fix_layout)
    start = numeric.iloc[:, 0].to_numpy()
    end = numeric.iloc[:, 1].to_numpy()
    percent = numeric.iloc[:, 2].to_numpy(dtype=np.float64)
    methylated = numeric.iloc[:, 3].to_numpy(dtype=np.float64)
    unmethylated = numeric.iloc[:, 4].to_numpy(dtype=np.float64)

    def first_bad(mask) -> str:
        row = int(np.flatnonzero(mask)[0])
        return f"{int(mask.sum())} rows, first data row {row + 1}: {table.iloc[row].tolist()}"

    if np.any((percent < 0) | (percent > 100)):
        bad = (percent < 0) | (percent > 100)
        raise DeconflowError(path, f"percent methylated outside [0, 100] ({first_bad(bad)})",
                             f"check the column order: {COLUMNS}")
    counts = np.concatenate([methylated, unmethylated])
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        bad = (methylated < 0) | (unmethylated < 0) | (methylated != np.round(methylated)) | (unmethylated != np.round(unmethylated))
        raise DeconflowError(path, f"read counts must be non-negative integers ({first_bad(bad)})", f"check the column order: {COLUMNS}")
    total = methylated + unmethylated
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(total > 0, 100.0 * methylated / np.maximum(total, 1), percent)
    mismatch = np.abs(expected - percent) > PERCENT_TOLERANCE
    if mismatch.any():
        raise DeconflowError(path, f"percent methylated disagrees with 100·methylated/(methylated + unmethylated) ({first_bad(mismatch)})",
                             f"check the column order: {COLUMNS}")
    lowest = 1 if fmt == "bismark" and not zero_based else 0
    if np.any(start < lowest) or np.any(end < start) or np.any(start != np.round(start)):
        bad = (start < lowest) | (end < start) | (start != np.round(start))
        other = "methyldackel" if fmt == "bismark" else "bismark"
        raise DeconflowError(path, f"positions are not {'1-based' if lowest else '0-based'} start ≤ end ({first_bad(bad)})",
                             f"check the file; if it is a {other} file set `format: {other}` (--format {other})")
    position = start.astype(np.int64) - lowest
    chrom = pd.Categorical(table.iloc[:, 0].astype(str))
    return MethylationCalls(sample_id_from_path(path), chrom, position, methylated.astype(np.int64), total.astype(np.int64), str(path))


def _read_calls_table(path: Path, what: str, fix: str, container_what: str | None = None, **read_csv) -> pd.DataFrame:
    """``pandas.read_csv(path, comment="#", **read_csv)`` of a call file, its container found by its
    magic bytes (refusals name ``container_what``, default ``what``); an empty file or one pandas
    cannot parse is one DeconflowError naming ``what`` and ``fix``."""
    try:
        return pd.read_csv(path, comment="#", low_memory=False,
                           compression=pandas_compression(path, container_what or what, fix), **read_csv)
    except DeconflowError:
        raise
    except pd.errors.EmptyDataError:
        raise DeconflowError(path, f"{what} has no calls", fix) from None
    except Exception as exc:
        raise DeconflowError(path, f"cannot be parsed as a {what} ({type(exc).__name__}: {exc})", fix) from None


def _read_whitespace(path: Path, what: str, fix: str, usecols=None, names=None, header=None) -> pd.DataFrame:
    return _read_calls_table(path, what, fix, sep=r"\s+", header=header, usecols=usecols, names=names)


def _calls(path: Path, chrom, position, methylated, total, what: str, fix: str) -> MethylationCalls:
    methylated = np.asarray(methylated, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    bad = ~np.isfinite(methylated) | ~np.isfinite(total) | (methylated < 0) | (methylated > total) | (methylated != np.round(methylated))
    if bad.any():
        raise DeconflowError(path, f"{what}: {int(bad.sum())} rows whose read counts are not 0 ≤ methylated ≤ total integers "
                                   f"(first data row {int(np.flatnonzero(bad)[0]) + 1})", fix)
    return MethylationCalls(sample_id_from_path(path), pd.Categorical(np.asarray(chrom).astype(str)),
                            np.asarray(position, dtype=np.int64), methylated.astype(np.int64), total.astype(np.int64), str(path))


def read_modkit(path) -> MethylationCalls:
    """``modkit pileup`` bedMethyl (18 fields, tab- or space-separated counts; 0-based starts).

    Per position and strand: methylated = N_mod of the ``m`` (5mC) row plus N_mod of the ``h``
    (5hmC) row, since bisulfite atlases cannot tell 5hmC from 5mC; total = N_valid_cov (which
    counts every call of the position: modified, canonical and other modifications). Rows of
    other codes (6mA ``a``...) are left out; so are positions that are not CpGs of the atlas
    regions, by the aggregation. Logged."""
    path = Path(path)
    what, fix = "modkit bedMethyl", "give `modkit pileup` output as written (18 columns; e.g. `modkit pileup --cpg --ref REF in.bam out.bed`)"
    table = _read_whitespace(path, what, fix, usecols=[0, 1, 3, 5, 9, 11],
                             names=["chrom", "start", "code", "strand", "valid", "n_mod"])
    table = table[table["code"].astype(str).isin(MODKIT_C_CODES)]
    if table.empty:
        raise DeconflowError(path, f"{what} has no cytosine modification rows (codes {sorted(MODKIT_C_CODES)})", fix)
    grouped = table.groupby(["chrom", "start", "strand"], sort=False, observed=True)
    summed = grouped.agg(n_mod=("n_mod", "sum"), valid=("valid", "max")).reset_index()
    codes = sorted(table["code"].astype(str).unique())
    log.info("%s: modkit bedMethyl, codes %s: methylated = N_mod of %s (5hmC counted as methylated, as bisulfite "
             "sequencing sees it), total = N_valid_cov; %d positions", path, codes, " + ".join(codes), len(summed))
    return _calls(path, summed["chrom"], summed["start"], summed["n_mod"], summed["valid"], what, fix)


def read_encode_bedmethyl(path) -> MethylationCalls:
    """ENCODE WGBS bedMethyl (11 columns: chrom, 0-based start, end, name, score, strand, thick
    start/end, colour, coverage, percent methylated): total = coverage, methylated =
    round(coverage · percent / 100) (the percent is rounded by the tool: counts within 0.5)."""
    path = Path(path)
    what, fix = "ENCODE bedMethyl", "give the bedMethyl as written (11 columns: ..., coverage, percent methylated)"
    table = _read_whitespace(path, what, fix, usecols=[0, 1, 9, 10], names=["chrom", "start", "coverage", "percent"])
    methylated = np.rint(table["coverage"].to_numpy(dtype=np.float64) * table["percent"].to_numpy(dtype=np.float64) / 100.0)
    log.info("%s: ENCODE bedMethyl (0-based): methylated reads = coverage x percent / 100, rounded; %d positions", path, len(table))
    return _calls(path, table["chrom"], table["start"], methylated, table["coverage"], what, fix)


def read_cytosine_report(path) -> MethylationCalls:
    """Bismark ``coverage2cytosine`` / MethylDackel ``--cytosine_report`` (7 fields, 1-based
    positions): the CG rows with reads; CHG/CHH rows (a CX report) are left out."""
    path = Path(path)
    what, fix = "cytosine report", "give the report as coverage2cytosine writes it (chrom, position, strand, methylated, unmethylated, context, trinucleotide)"
    table = _read_whitespace(path, what, fix, names=["chrom", "position", "strand", "m", "u", "context", "tri"])
    cg = table["context"].astype(str) == "CG"
    total = table["m"] + table["u"]
    keep = cg & (total > 0)
    log.info("%s: cytosine report (1-based): %d CpG calls with reads of %d rows (%d non-CG rows left out)", path,
             int(keep.sum()), len(table), int((~cg).sum()))
    table = table[keep]
    return _calls(path, table["chrom"], table["position"] - 1, table["m"], table["m"] + table["u"], what, fix)


def read_region_counts(path) -> MethylationCalls:
    """A region table with read counts (nanomix methylome ``chr start end total_calls
    modified_calls``, or methylated + unmethylated columns): one pseudo-call per region at its
    0-based start, so that aggregation puts it into the atlas region that contains that start."""
    from .tables import read_table, to_numbers

    path = Path(path)
    what = "region read-count table"
    fix = "give columns chr, start, end (0-based, BED) and read counts total_calls, modified_calls"
    table = read_table(path, what, fix, header=True, comment="#")
    header = [str(c).strip().lower() for c in table.columns]
    regions = region_columns_of(header)
    counts = region_count_columns(header)
    if not regions or not counts:
        raise DeconflowError(path, f"{what}: no chr/start/end and read-count columns (header {list(table.columns)[:8]})", fix)
    rename = dict(zip(table.columns, header))
    table = table.rename(columns=rename)
    numbers = to_numbers(table, [regions[1], *counts.values()], what, fix)
    methylated = numbers[counts["methylated"]]
    total = numbers[counts["total"]] if "total" in counts else methylated + numbers[counts["unmethylated"]]
    log.info("%s: region read-count table (%s, %s: %s): %d regions, 0-based starts", path, ", ".join(regions),
             "methylated" , ", ".join(counts.values()), len(table))
    return _calls(path, table[regions[0]], numbers[regions[1]], methylated, total, what, fix)


# --------------------------------------------------------------------------- regions
def parse_region_ids(region_ids, source=None) -> pd.DataFrame:
    """``chr:start-end`` ids -> DataFrame ``chrom, start, end`` (BED: 0-based, end exclusive)."""
    ids = pd.Index(region_ids).astype(str)
    parts = ids.str.extract(REGION_ID)
    bad = parts["chrom"].isna().to_numpy()
    if bad.any():
        raise DeconflowError(source, f"{int(bad.sum())} atlas regions are not chr:start-end ids (e.g. {ids[bad][:3].tolist()})",
                             "give the atlas region ids as chr1:100-200, or chr/start/end columns")
    regions = pd.DataFrame({"chrom": parts["chrom"].to_numpy(), "start": parts["start"].astype(np.int64).to_numpy(),
                            "end": parts["end"].astype(np.int64).to_numpy()}, index=ids)
    if np.any(regions["end"] <= regions["start"]):
        raise DeconflowError(source, "atlas regions with end ≤ start", "give BED intervals: 0-based start, exclusive end")
    return regions


def _chromosome_fix(sample_chroms, atlas_chroms) -> str:
    sample_chroms, atlas_chroms = set(map(str, sample_chroms)), set(map(str, atlas_chroms))
    if {f"chr{c}" for c in sample_chroms} & atlas_chroms:
        return ("add the 'chr' prefix the atlas uses to the chromosome names, e.g. "
                "`zcat s.cov.gz | sed 's/^/chr/' | gzip > s.chr.cov.gz`, and check the genome build (embedded atlas: hg38)")
    if {c[3:] for c in sample_chroms if c.startswith("chr")} & atlas_chroms:
        return "remove the 'chr' prefix the atlas does not use, e.g. `zcat s.cov.gz | sed 's/^chr//' | gzip > s.nochr.cov.gz`"
    return "align the sample to the atlas's genome build (embedded atlas: hg38, chromosomes chr1..chr22, chrX)"


def aggregate_calls(calls: MethylationCalls, regions: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(methylated, total) read counts per region (arrays in ``regions`` order)."""
    methylated = np.zeros(len(regions), dtype=np.int64)
    total = np.zeros(len(regions), dtype=np.int64)
    sample_chroms = [str(c) for c in calls.chrom.categories]  # exactly the names in the file
    atlas_chroms = pd.unique(regions["chrom"])
    shared = [c for c in atlas_chroms if c in set(sample_chroms)]
    if not shared:
        shown = sorted(map(str, sample_chroms))[:4]
        raise DeconflowError(calls.path, f"no chromosome name matches the atlas's (file: {shown}..., atlas: {sorted(atlas_chroms)[:4]}...)",
                             _chromosome_fix(sample_chroms, atlas_chroms))
    codes = calls.chrom.codes
    region_chrom = regions["chrom"].to_numpy()
    for chrom in shared:
        on_chrom = codes == calls.chrom.categories.get_loc(chrom)
        order = np.argsort(calls.position[on_chrom], kind="stable")
        position = calls.position[on_chrom][order]
        cum_m = np.concatenate([[0], np.cumsum(calls.methylated[on_chrom][order])])
        cum_t = np.concatenate([[0], np.cumsum(calls.total[on_chrom][order])])
        rows = np.flatnonzero(region_chrom == chrom)
        lo = np.searchsorted(position, regions["start"].to_numpy()[rows], side="left")
        hi = np.searchsorted(position, regions["end"].to_numpy()[rows], side="left")
        methylated[rows] = cum_m[hi] - cum_m[lo]
        total[rows] = cum_t[hi] - cum_t[lo]
    return methylated, total


def read_methylation_samples(paths, region_ids, fmt: str | None = None, regions_source=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-sample call files -> (methylated, total) read counts, regions x samples DataFrames."""
    regions = parse_region_ids(region_ids, regions_source)
    methylated, total, samples = {}, {}, {}
    for path in paths:
        calls = read_methylation_calls(path, calls_format(path, fmt) or "bismark")
        if calls.sample_id in samples:
            raise DeconflowError(path, f"sample id {calls.sample_id!r} (from the file name) is also that of {samples[calls.sample_id]}",
                                 "give every sample file a distinct name")
        samples[calls.sample_id] = path
        methylated[calls.sample_id], total[calls.sample_id] = aggregate_calls(calls, regions)
    index = pd.Index(regions.index, name="region")
    return pd.DataFrame(methylated, index=index), pd.DataFrame(total, index=index)


def write_calls(path, chrom, start_0based, methylated, total, fmt: str) -> None:
    """Write calls in a tool's layout (tests and examples): 0-based positions are converted to
    the format's convention (Bismark 1-based, start = end; MethylDackel 0-based, end = start + 1)."""
    import gzip

    methylated = np.asarray(methylated, dtype=np.int64)
    total = np.asarray(total, dtype=np.int64)
    start_0based = np.asarray(start_0based, dtype=np.int64)
    percent = np.where(total > 0, 100.0 * methylated / np.maximum(total, 1), 0.0)
    if fmt == "bismark":
        frame = pd.DataFrame({"c": chrom, "s": start_0based + 1, "e": start_0based + 1, "p": percent, "m": methylated, "u": total - methylated})
        header = ""
    else:
        frame = pd.DataFrame({"c": chrom, "s": start_0based, "e": start_0based + 1, "p": np.round(percent).astype(int), "m": methylated, "u": total - methylated})
        header = 'track type="bedGraph" description="deconflow CpG methylation levels"\n'
    text = header + frame.to_csv(sep="\t", header=False, index=False, float_format="%.6g", lineterminator="\n")
    with atomic_path(path) as tmp:
        if str(path).endswith(".gz"):
            with gzip.open(tmp, "wt") as handle:
                handle.write(text)
        else:
            tmp.write_text(text)


def calls_from_region_counts(regions: pd.DataFrame, methylated: np.ndarray, total: np.ndarray, rng: np.random.Generator,
                             cpgs_per_region: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CpG calls whose aggregation gives back per-region read counts (one sample; tests, examples).

    Each region gets ``cpgs_per_region`` CpGs at 0-based positions including its first base and
    its last base (both ends of the interval), and its reads are split among them at random
    (multinomial). Calls without reads are left out, as the tools do. Returns (chrom, 0-based
    position, methylated, total) in genome order.
    """
    methylated = np.asarray(methylated, dtype=np.int64)
    total = np.asarray(total, dtype=np.int64)
    k = max(int(cpgs_per_region), 2)
    start = regions["start"].to_numpy()
    end = regions["end"].to_numpy()
    offsets = np.linspace(0.0, 1.0, k)
    position = (start[:, None] + np.round(offsets[None, :] * (end - 1 - start)[:, None])).astype(np.int64)
    share = rng.dirichlet(np.ones(k), size=len(regions))
    split_m = rng.multinomial(methylated, share)
    split_u = rng.multinomial(total - methylated, share)
    chrom = np.repeat(regions["chrom"].to_numpy(), k)
    position, split_m, split_u = position.ravel(), split_m.ravel(), split_u.ravel()
    keep = (split_m + split_u) > 0
    order = np.lexsort((position[keep], chrom[keep]))
    return chrom[keep][order], position[keep][order], split_m[keep][order], (split_m + split_u)[keep][order]
