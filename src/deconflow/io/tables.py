"""The one reader of delimited text tables: every table deconflow reads goes through here.

Bulk tables, measured fractions (``truth``), label tables, gene tables, ``tx2gene``,
``cell_mrna``, quantifier outputs and the summaries the pipeline reads back are all parsed by
:func:`read_table`, which decides from the bytes, not from the file name:

* **separator**: tab, comma or semicolon, whichever splits the first lines into the same number
  of fields (the header may have one field fewer, as R's ``write.table`` leaves it); a separator
  that disagrees with the extension (a ``.csv`` holding tabs) is used and logged;
* **quotes**: in a tab-separated table a ``"`` is data, never quoting, so no line can swallow the
  next ones (a field wholly in quotes, as R writes them, loses its quotes; a stray quote at the
  edge of an identifier is dropped and logged with its line). In comma/semicolon tables quotes
  are CSV quoting, and a quoted field running over a line end is an error naming that line;
* **header**: with ``header=None`` a first row whose fields after the first are all numbers is
  data (htseq-count files, headerless matrices), reported in ``attrs["has_header"]``, unless its
  first field is the name of an id column (``gene``, ``Hugo_Symbol``, ``GeneSymbol``, ``ID_REF``:
  :func:`looks_like_id_header`): then the numbers are sample names (``Hugo_Symbol 1001 1002``);
* **decimal commas** (``12,5`` from a European spreadsheet: semicolon or tab tables, or quoted
  cells of a comma-separated one) are recognised by :func:`to_numbers` when the table has no dot
  decimals, and logged;
* **identifiers stay text**: every cell is read as a string; numbers are parsed only in the
  columns a caller names, and a cell that is not a number is an error naming file, line, column
  and value;
* **one row per line**: blank lines and comment lines (``comment``) are skipped, and the row
  count is checked against the number of remaining lines; ragged rows are errors naming the line.

This module imports nothing of deconflow but its errors, so every reader can use it.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DeconflowError

log = logging.getLogger(__name__)

SEPARATOR_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon"}
#: cells read as missing values where a caller allows them (``allow_missing``)
MISSING = frozenset({"", "NA", "NaN", "nan", "NULL", "null", "N/A", "#N/A"})
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|Inf|INF|nan|NaN)$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+([eE][+-]?\d+)?$")
_DOT_DECIMAL = re.compile(r"^[+-]?\d*\.\d+([eE][+-]?\d+)?$")
_SNIFF_LINES = 200


def _extension_separator(path: Path) -> str | None:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return ","
    if name.endswith((".tsv", ".tab", ".txt", ".sf", ".results", ".tabular")):
        return "\t"
    return None


# --------------------------------------------------------------------------- containers
#: (magic bytes, container) recognised at the start of a file, whatever its name
MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"PK\x03\x04", "zip"),
         (b"\x89HDF\r\n\x1a\n", "hdf5"), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"))
CONTAINER_NAMES = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz", "zip": ".zip"}


def container_of(path) -> str | None:
    """The container of ``path`` from its first bytes: ``gzip``, ``bz2``, ``xz``, ``zip``,
    ``xlsx`` (an Office Open XML workbook, itself a zip), ``ods``, ``hdf5``, ``ole2`` (an old
    ``.xls``), or None (plain bytes). The name is never consulted."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    kind = next((name for magic, name in MAGIC if head.startswith(magic)), None)
    if kind == "zip":
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if any(n.startswith("xl/") for n in names):
                    return "xlsx"
                if "mimetype" in names and b"opendocument.spreadsheet" in archive.read("mimetype"):
                    return "ods"
        except zipfile.BadZipFile:
            return "zip"
    return kind


def _refuse_container(path: Path, kind: str, what: str, fix: str) -> None:
    if kind in ("xlsx", "ods", "ole2"):
        book = {"xlsx": "an Excel workbook (.xlsx)", "ods": "an OpenDocument spreadsheet (.ods)", "ole2": "an old Excel workbook (.xls)"}[kind]
        raise DeconflowError(path, f"{what} file is {book}, not a text table",
                             "save the sheet as tab-separated text (File > Save as > Text (Tab delimited) .tsv) or export it with "
                             "pandas: pd.read_excel(FILE, index_col=0).to_csv('bulk.tsv', sep='\\t')")
    if kind == "hdf5":
        raise DeconflowError(path, f"{what} file is HDF5, not a text table",
                             "give an AnnData .h5ad (samples x genes) as a bulk, or a text table" if what == "bulk" else fix)


def _zip_member(path: Path, what: str):
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = [i for i in archive.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX/")
                   and not i.filename.rsplit("/", 1)[-1].startswith(".")]
    if len(members) != 1:
        shown = [m.filename for m in members[:5]]
        raise DeconflowError(path, f"{what} file is a zip archive of {len(members)} files {shown}",
                             "unzip it and give the one table inside")
    return members[0].filename


def open_binary(path, what: str = "table", fix: str = "give a tab- or comma-separated text table", quiet: bool = False):
    """A binary handle on the content of ``path``, unpacked by its magic bytes (gzip, bz2, xz,
    a zip archive of one file) whatever its name; a ``.gz`` name on plain text is read as plain
    text. Both are logged. Workbooks and HDF5 are refused naming the container."""
    import bz2
    import lzma
    import zipfile

    path = Path(path)
    kind = container_of(path)
    _refuse_container(path, kind, what, fix)
    named = next((k for k, suffix in CONTAINER_NAMES.items() if path.name.lower().endswith(suffix)), None)
    if quiet:
        pass
    elif named and kind != named:
        log.info("%s: named %s but %s; read as %s", path, CONTAINER_NAMES[named],
                 f"{kind}-compressed" if kind else "plain text (not compressed)", kind or "plain text")
    elif kind in CONTAINER_NAMES and not named:
        log.info("%s: %s-compressed (by its first bytes) although the name does not end in %s; unpacked", path, kind,
                 CONTAINER_NAMES[kind])
    if kind == "gzip":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    if kind == "xz":
        return lzma.open(path, "rb")
    if kind == "zip":
        member = _zip_member(path, what)
        if not quiet:
            log.info("%s: zip archive, reading its one file %s", path, member)
        with zipfile.ZipFile(path) as archive:
            return io.BytesIO(archive.read(member))
    return open(path, "rb")


def pandas_compression(path, what: str = "file", fix: str = "give a text file") -> str | dict | None:
    """The ``compression`` argument for ``pandas.read_csv`` of ``path`` from its magic bytes."""
    path = Path(path)
    kind = container_of(path)
    _refuse_container(path, kind, what, fix)
    if kind == "zip":
        return {"method": "zip", "archive_name": _zip_member(path, what)}
    return kind if kind in CONTAINER_NAMES else None


def read_text(path, what: str = "table", fix: str = "give a tab- or comma-separated text table") -> str:
    """The whole file as text (gzip/bz2/xz/zip unpacked by their magic bytes, see
    :func:`open_binary`; UTF-8 with or without BOM, Latin-1 as fallback)."""
    path = Path(path)
    if not path.exists():
        raise DeconflowError(path, f"{what} file does not exist", fix)
    try:
        with open_binary(path, what, fix) as handle:
            raw = handle.read()
    except (OSError, EOFError, ValueError) as exc:
        kind = container_of(path)
        raise DeconflowError(path, f"{what} file is a damaged {kind or 'file'} ({type(exc).__name__}: {exc})",
                             f"download or compress it again{' (test it with `' + kind + ' -t`)' if kind in ('gzip', 'bz2', 'xz') else ''}") from None
    if raw[257:262] == b"ustar":  # a tar archive (bulk.tar.gz)
        raise DeconflowError(path, f"{what} file is a tar archive", "extract it (tar -xf) and give the table inside")
    if b"\x00" in raw[:8192]:
        kind = "HDF5" if raw[:8] == b"\x89HDF\r\n\x1a\n" else "binary"
        raise DeconflowError(path, f"{what} file is {kind}, not a text table", fix)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def head_lines(path, n: int = 30) -> list[str]:
    """The first ``n`` lines of ``path`` as text (unpacked as :func:`open_binary` does); [] when
    it cannot be read as text."""
    import io as _io

    lines: list[str] = []
    try:
        with open_binary(path, quiet=True) as raw, _io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as handle:
            for _ in range(n):
                line = handle.readline()
                if not line:
                    break
                lines.append(line.rstrip("\r\n"))
    except (OSError, EOFError, ValueError, DeconflowError):
        return []
    return lines


def _count_outside_quotes(line: str, sep: str) -> int:
    if '"' not in line or sep == "\t":
        return line.count(sep)
    count, quoted = 0, False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            count += 1
    return count


def sniff_separator(lines: list[str], path: Path) -> str | None:
    """The separator that splits ``lines`` (header first) into equal field counts, or None.

    The header may hold one field fewer than the data lines (no name for the id column).
    Preference when several fit: the extension's, then tab, comma, semicolon.
    """
    sample = lines[:_SNIFF_LINES]
    if not sample:
        return None
    preferred = _extension_separator(path)
    order = ([preferred] if preferred else []) + [s for s in SEPARATOR_NAMES if s != preferred]
    fitting = []
    for sep in order:
        counts = [_count_outside_quotes(line, sep) for line in sample]
        data = counts[1:] or counts[:1]
        if min(data) == 0 or len(set(data)) != 1:
            continue
        if counts[0] in (data[0], data[0] - 1):
            fitting.append(sep)
    if fitting:
        return fitting[0]
    # none is consistent: the separator of the header, if any, so that the ragged line is named
    for sep in order:
        if _count_outside_quotes(sample[0], sep) > 0:
            return sep
    return None


def _first_unbalanced_quote(lines: list[str], numbers: list[int]) -> int | None:
    for line, number in zip(lines, numbers):
        if line.count('"') % 2:
            return number
    return None


def read_table(path, what: str = "table", fix: str = "give a tab- or comma-separated text table with a header row",
               *, header: bool | None = True, comment: str | None = None, min_columns: int = 2) -> pd.DataFrame:
    """A delimited text table as strings (see the module docstring for the rules).

    ``header``: True (the first row names the columns), False (no header), None (detect: a first
    row whose fields after the first are all numbers is data). Returns a DataFrame of ``str``
    (rows x fields, the id column included), columns named after the header (or ``0..n-1``), with
    ``attrs``: ``path``, ``sep``, ``has_header``, ``lines`` (1-based file line of each row),
    ``decimal_comma`` (set by :func:`to_numbers`). Raises DeconflowError naming file, problem
    and ``fix`` for an empty or binary file, fewer than ``min_columns`` fields, a line with
    another number of fields than the header, or a quoted field running over a line end.
    """
    path = Path(path)
    text = read_text(path, what, fix)
    kept, numbers = [], []
    lines = text.splitlines()
    gct = bool(lines) and lines[0].strip() == "#1.2" and header is not False
    if gct:  # GenePattern GCT 1.2: version line, "rows columns" line, then Name, Description, samples
        log.info("%s: GCT 1.2 file (GenePattern / GEO): its version and size lines skipped, column Description left out", path)
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (comment and line.startswith(comment)) or (gct and number <= 2):
            continue
        kept.append(line)
        numbers.append(number)
    if not kept:
        raise DeconflowError(path, f"{what} file is empty", fix)
    sep = sniff_separator(kept, path)
    if sep is None:
        if min_columns > 1:
            raise DeconflowError(path, f"{what} has one column only: no tab, comma or semicolon separates its fields", fix)
        sep = "\t"
    expected = _extension_separator(path)
    if expected and sep != expected:
        log.info("%s: fields are separated by %ss although the name ends in %s; read as %s-separated",
                 path, SEPARATOR_NAMES[sep], Path(path.name.lower().removesuffix(".gz")).suffix, SEPARATOR_NAMES[sep])
    if header is not False and len(kept) > 1 and _count_outside_quotes(kept[0], sep) == _count_outside_quotes(kept[1], sep) - 1:
        kept[0] = sep + kept[0]  # header without a name for the id column (R's write.table)
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        frame = pd.read_csv(io.StringIO("\n".join(kept)), sep=sep, header=None, dtype=str, keep_default_na=False,
                            na_filter=False, quoting=quoting, skip_blank_lines=False, engine="c")
    except pd.errors.ParserError as exc:
        match = re.search(r"line (\d+), saw (\d+)", str(exc))
        if match:
            line = numbers[min(int(match.group(1)), len(numbers)) - 1]
            raise DeconflowError(path, f"line {line} has {match.group(2)} fields, the lines before it fewer", fix) from None
        quote_line = _first_unbalanced_quote(kept, numbers)
        if quote_line is not None:
            raise DeconflowError(path, f'line {quote_line}: a `"` opens a quoted field that does not close on that line',
                                 'remove the stray `"` (or save the table tab-separated)') from None
        raise DeconflowError(path, f"{what} cannot be parsed ({exc})", fix) from None
    if len(frame) != len(kept):  # a quoted field ran over line ends (comma/semicolon tables only)
        quote_line = _first_unbalanced_quote(kept, numbers)
        where = f"line {quote_line}" if quote_line is not None else "a line"
        raise DeconflowError(path, f"{len(kept)} lines but {len(frame)} rows: at {where} a `\"` opens a quoted field "
                                   "that runs over the following lines", 'remove the stray `"` (or save the table tab-separated)')
    if sep == "\t" and '"' in text:
        frame = _unquote_tab_fields(frame, numbers, path)
    # a separator at the end of every line leaves an empty last column
    while frame.shape[1] > 1 and (frame.iloc[:, -1] == "").all():
        frame = frame.iloc[:, :-1]
    if frame.shape[1] < min_columns:
        raise DeconflowError(path, f"{what} has {frame.shape[1]} column(s), at least {min_columns} are needed", fix)
    # a ragged line shorter than the others leaves empty trailing cells in pandas' fill; name it
    width = frame.shape[1]
    if frame.iloc[:, -1].eq("").any():
        short = next((i for i, line in enumerate(kept) if _count_outside_quotes(line, sep) + 1 < width), None)
        if short is not None:
            raise DeconflowError(path, f"line {numbers[short]} has {_count_outside_quotes(kept[short], sep) + 1} fields, "
                                       f"the others {width}", fix)
    has_header = bool(header) if header is not None else (
        looks_like_id_header(frame.iloc[0, 0]) or not _looks_numeric_row(frame.iloc[0, 1:].tolist()))
    if has_header:
        names = frame.iloc[0].tolist()
        frame = frame.iloc[1:].reset_index(drop=True)
        frame.columns = [str(n) for n in names]
        row_lines = np.asarray(numbers[1:])
    else:
        frame.columns = [str(i) for i in range(width)]
        row_lines = np.asarray(numbers)
    frame.attrs.update(path=str(path), sep=sep, has_header=has_header, lines=row_lines, decimal_comma=False)
    return frame


#: names of an id column: a first row starting with one is a header even when the sample names are numbers
ID_HEADERS = frozenset({"", "gene", "genes", "gene_id", "geneid", "gene_ids", "gene_name", "gene_symbol", "symbol", "symbols",
                        "id", "ids", "ensembl", "ensembl_id", "ensembl_gene_id", "feature", "features", "feature_id", "region",
                        "regions", "name", "target_id", "transcript_id", "tx", "sample", "sample_id", "samples", "cell_type",
                        "barcode", "row.names", "rownames", "unnamed: 0", "x", "#"})


#: words of an id column's name (``Hugo_Symbol``, ``GeneSymbol``, ``Gene.Symbol``, ``ID_REF``, ``Entrez_Gene_Id``)
ID_HEADER_WORDS = frozenset({"hugo", "hgnc", "entrez", "ncbi", "ensembl", "refseq", "gene", "genes", "symbol", "symbols", "id", "ids",
                             "ref", "name", "names", "identifier", "identifiers", "feature", "features", "probe", "probes", "probeset",
                             "set", "transcript", "transcripts", "target", "region", "regions", "cpg", "row", "accession", "locus",
                             "tag", "composite", "element", "official", "approved", "stable", "of", "unnamed"})
#: at least one of these makes the name an id column's (``Hugo`` alone could be a gene)
ID_HEADER_KEYS = frozenset({"symbol", "symbols", "id", "ids", "ref", "name", "names", "identifier", "identifiers", "gene", "genes",
                            "probe", "probeset", "feature", "features", "transcript", "region", "regions", "accession"})


def looks_like_id_header(first_field: str) -> bool:
    """True for the name of an identifier column: the usual ones (``gene``, ``gene_id``,
    ``Geneid``...) and any name made only of such words, split at ``_ . - space`` and at
    lower-to-upper case changes (``Hugo_Symbol``, ``GeneSymbol``, ``Gene.Symbol``, ``ID_REF``,
    ``Entrez_Gene_Id``). A gene symbol is never made of these words alone (``ID1`` is one word
    with a digit)."""
    text = str(first_field).strip().strip('"')
    if text.lower() in ID_HEADERS:
        return True
    words = []
    for word in (w.lower() for w in re.split(r"[_.\-\s:]+|(?<=[a-z])(?=[A-Z])", text) if w):
        if word in ID_HEADER_WORDS:
            words.append(word)
            continue
        # two words written as one (ENTREZID, GENESYMBOL, ProbeID in capitals)
        split = next(((word[:i], word[i:]) for i in range(2, len(word) - 1)
                      if word[:i] in ID_HEADER_WORDS and word[i:] in ID_HEADER_WORDS), None)
        if split is None:
            return False
        words.extend(split)
    return bool(words) and any(w in ID_HEADER_KEYS for w in words)


def _looks_numeric_row(cells) -> bool:
    cells = [c.strip() for c in cells]
    return bool(cells) and all(_NUMBER.match(c) or _DECIMAL_COMMA.match(c) for c in cells)


def _unquote_tab_fields(frame: pd.DataFrame, numbers: list[int], path: Path) -> pd.DataFrame:
    """Fields wholly in quotes lose them (R's write.table); in the id column and the header a
    stray quote at an edge is dropped and logged. Other quotes stay data."""
    for position in range(frame.shape[1]):
        column = frame.iloc[:, position]
        if not column.str.contains('"', regex=False).any():
            continue
        wrapped = column.str.len().ge(2) & column.str.startswith('"') & column.str.endswith('"')
        column = column.where(~wrapped, column.str[1:-1].str.replace('""', '"', regex=False))
        stray = column.str.startswith('"') | column.str.endswith('"')
        if position > 0:  # in value columns only the header cell is an identifier
            stray = stray & (np.arange(len(stray)) == 0)
        if stray.any():
            stray_rows = np.flatnonzero(stray.to_numpy())
            if len(stray_rows):
                first = stray_rows[0]
                log.warning("%s: %d identifier(s) with a stray `\"` (first at line %d: %s); quotes in tab-separated files are "
                            "data, not quoting: read as %s", path, len(stray_rows), numbers[first], column.iloc[first],
                            column.iloc[first].strip('"'))
                column = column.where(~stray, column.str.strip('"'))
        frame.iloc[:, position] = column
    return frame


def to_numbers(frame: pd.DataFrame, columns, what: str, fix: str, *, allow_missing: bool = False) -> pd.DataFrame:
    """``frame[columns]`` (strings from :func:`read_table`) as float64.

    Decimal commas (``12,5``) are read as decimal points when the table has no dot decimals; this
    is logged once. ``allow_missing`` turns empty/NA cells into NaN;
    otherwise they, and any cell that is not a number, are an error naming line, column and value.
    """
    path = frame.attrs.get("path")
    lines = frame.attrs.get("lines")
    block = frame.loc[:, list(columns)]
    if block.shape[1] == 0:
        return pd.DataFrame(index=frame.index, dtype=np.float64)
    try:  # the common case, every cell a number with a decimal point: one conversion
        fast = block.to_numpy(dtype=object).astype(np.float64)
    except (ValueError, TypeError):
        fast = None
    if fast is not None:
        return pd.DataFrame(fast, index=frame.index, columns=block.columns)
    stacked = block.to_numpy(dtype=object).ravel()
    sample = [str(c).strip() for c in stacked[:: max(1, len(stacked) // 20000)]]
    # (in a comma-separated file a cell holds a comma only inside quotes: "1,5" is unambiguous too)
    decimal_comma = any(_DECIMAL_COMMA.match(c) for c in sample) and not any(_DOT_DECIMAL.match(c) for c in sample)
    out = {}
    for name in block.columns:
        text = block[name].str.strip()
        if decimal_comma:
            text = text.str.replace(",", ".", regex=False)
        values = pd.to_numeric(text, errors="coerce")
        bad = values.isna().to_numpy() & ~(text.str.lower().isin({"nan"}).to_numpy())
        missing = text.isin(MISSING).to_numpy()
        if allow_missing:
            bad &= ~missing
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = block[name].iloc[row]
            line = f"line {lines[row]}" if lines is not None else f"row {row + 1}"
            problem = (f"{what}: empty value in column {name!r} at {line}" if value.strip() == "" else
                       f"{what}: non-numeric value {value!r} in column {name!r} at {line} ({int(bad.sum())} such cells)")
            raise DeconflowError(path, problem, fix)
        out[name] = values.to_numpy(dtype=np.float64)
    if decimal_comma and not frame.attrs.get("decimal_comma"):
        example = next(c for c in sample if _DECIMAL_COMMA.match(c))
        log.info("%s: decimal commas (e.g. %s) read as decimal points", path, example)
        frame.attrs["decimal_comma"] = True
    return pd.DataFrame(out, index=frame.index)


def non_numeric_columns(frame: pd.DataFrame, columns) -> list[str]:
    """The ``columns`` of a string table of which fewer than half the non-missing cells (of the
    first 2,000 rows) are numbers (a text column such as ``gene_name``, as opposed to a stray bad cell)."""
    bad = []
    head = frame.iloc[:2000]
    for name in columns:
        if pd.api.types.is_numeric_dtype(head[name]):
            continue
        text = head[name].str.strip()
        text = text[~text.isin(MISSING)]
        if len(text) and pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce").notna().mean() < 0.5:
            bad.append(str(name))
    return bad


def read_numeric_table(path, what: str = "table", fix: str = "give a tab- or comma-separated table with a header row",
                       *, header: bool | None = True, comment: str | None = None, allow_missing: bool = False,
                       min_columns: int = 2) -> pd.DataFrame:
    """A table whose first column holds identifiers (text) and the others numbers: float64 frame
    indexed by the identifiers (``str``), columns named after the header (``str``). ``attrs`` as
    for :func:`read_table`. Errors name the line of any cell that is not a number."""
    frame = read_table(path, what, fix, header=header, comment=comment, min_columns=min_columns)
    values = to_numbers(frame, frame.columns[1:], what, fix, allow_missing=allow_missing)
    values.index = pd.Index(frame.iloc[:, 0].astype(str).to_numpy(), name=frame.columns[0] or None)
    values.columns = pd.Index([str(c) for c in frame.columns[1:]])
    values.attrs.update(frame.attrs)
    return values


# --------------------------------------------------------------------------- region tables
#: names of a region table's coordinate columns (any case): UCSC / BED, wgbstools, nanomix
REGION_COLUMN_NAMES = {"chrom": ("chr", "chrom", "chromosome", "#chr", "#chrom", "seqnames", "seqname"),
                       "start": ("start", "chromstart", "chrom_start", "begin"),
                       "end": ("end", "chromend", "chrom_end", "stop")}
#: wgbstools ``beta_to_table`` CpG indices: coordinates of the blocks, never samples
CPG_INDEX_COLUMNS = ("startcpg", "endcpg")


def region_columns(columns) -> tuple[str, str, str] | None:
    """The (chrom, start, end) column names of a region table (``chr start end``, ``chrom
    chromStart chromEnd``, ``seqnames start end``, any case), or None."""
    found = {}
    for role, names in REGION_COLUMN_NAMES.items():
        found[role] = next((c for c in columns if str(c).strip().lower() in names), None)
    return (found["chrom"], found["start"], found["end"]) if all(found.values()) else None


def region_ids(frame: pd.DataFrame, columns: tuple[str, str, str], what: str, fix: str) -> pd.Index:
    """``chr:start-end`` ids of a string table's coordinate columns (start/end must be integers)."""
    chrom, start, end = columns
    numbers = to_numbers(frame, [start, end], what, fix)
    if not np.all(numbers.to_numpy() == np.round(numbers.to_numpy())):
        raise DeconflowError(frame.attrs.get("path"), f"{what}: columns {start!r}/{end!r} hold non-integer positions", fix)
    return pd.Index(frame[chrom].astype(str).str.strip() + ":" + numbers[start].astype(np.int64).astype(str) + "-"
                    + numbers[end].astype(np.int64).astype(str))

