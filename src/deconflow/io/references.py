"""Single-cell references as labs hold them: h5ad, 10x Cell Ranger ``.h5``, 10x matrix folders.

- 10x inputs are read with scanpy (``read_10x_h5`` / ``read_10x_mtx``), "Gene Expression"
  features only (antibody capture of CITE-seq files stays out). Their labels (and donors) come
  from a table (``labels``: CSV/TSV, a ``barcode`` column or the barcode first, then the
  ``label_key`` column); cells without a label are dropped and counted in the log, barcodes of the
  table missing from the matrix are an error naming both files.
- Raw counts: ``counts_layer`` if set, else ``.X`` if it holds non-negative integers, else
  ``.raw.X`` if that does; otherwise the reader refuses and says where it looked. Normalised
  values are never used.
- Genes: symbols are the feature names when the reference has them; the Ensembl IDs (10x
  ``gene_ids``, an h5ad ``var`` column, ``gene_column``) are kept as ``Reference.gene_aliases``
  for matching bulk files (``deconflow.io.genes``). Several Ensembl IDs sharing a symbol are summed.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DeconflowError
from .files import _check_unique, atomic_path
from .genes import canonical_genes, pick_gene_column
from .tables import read_table

log = logging.getLogger(__name__)

MTX_FILES = ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz")


@dataclass
class Reference:
    """A single-cell reference: raw counts (cells x genes, CSR int) and labels."""

    counts: sp.csr_matrix
    cell_ids: np.ndarray
    genes: np.ndarray
    labels: np.ndarray
    donors: np.ndarray | None = None
    path: str | None = None
    #: (feature, ensembl_id) pairs when the reference also carries Ensembl IDs (deconflow.io.genes)
    gene_aliases: pd.DataFrame | None = None

    @property
    def cell_types(self) -> list[str]:
        return sorted(pd.unique(self.labels).tolist())


def reference_kind(path) -> str:
    """``h5ad``, ``10x_h5`` or ``10x_mtx`` (a folder)."""
    path = Path(path)
    if path.is_dir():
        return "10x_mtx"
    if path.name.lower().endswith(".h5"):
        return "10x_h5"
    return "h5ad"


def _read_anndata(path: Path, kind: str):
    import anndata as ad

    if not path.exists():
        raise DeconflowError(path, "reference file does not exist", "check `reference` in the config")
    if kind == "h5ad":
        try:
            return ad.read_h5ad(path)
        except Exception as exc:  # h5py/anndata raise many types for corrupt files
            raise DeconflowError(
                path,
                f"cannot be read as h5ad ({type(exc).__name__}: {exc})",
                "the file is truncated or corrupt; re-export or re-download it",
            ) from None
    import scanpy as sc

    if kind == "10x_mtx":
        missing = [name for name in MTX_FILES if not (path / name).exists()]
        if missing:
            raise DeconflowError(path, f"10x matrix folder lacks {missing}",
                                 "give Cell Ranger's filtered_feature_bc_matrix folder (matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz)")
    try:
        with warnings.catch_warnings():  # duplicate symbols are expected; they are summed below
            warnings.simplefilter("ignore")
            if kind == "10x_h5":
                adata = sc.read_10x_h5(path, gex_only=True)
            else:
                adata = sc.read_10x_mtx(path, var_names="gene_symbols", make_unique=False, gex_only=True)
    except Exception as exc:
        what = "Cell Ranger .h5" if kind == "10x_h5" else "10x matrix folder"
        raise DeconflowError(
            path,
            f"cannot be read as a {what} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            "the file is truncated or corrupt, or not Cell Ranger output; copy it again from the Cell Ranger run",
        ) from None
    if adata.n_vars == 0:
        raise DeconflowError(path, "no 'Gene Expression' features", "give the gene expression matrix of the Cell Ranger run")
    return adata


def _is_raw_counts(matrix) -> tuple[bool, str]:
    """Whether ``matrix`` holds non-negative integers; else why not."""
    data = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    if data.size == 0:
        return True, ""
    if not np.all(np.isfinite(data)):
        return False, f"{int((~np.isfinite(data)).sum())} NaN/inf values"
    if data.min() < 0:
        return False, "negative values"
    if not np.all(np.equal(np.mod(data, 1), 0)):
        return False, "non-integer values"
    return True, ""


def raw_counts(adata, path, counts_layer: str | None):
    """The raw counts matrix of ``adata`` and where it was found (see the module docstring)."""
    if counts_layer:
        if counts_layer not in adata.layers:
            raise DeconflowError(
                path,
                f"counts layer {counts_layer!r} not found (layers: {list(adata.layers.keys())})",
                "set `counts_layer` to the layer with raw counts, or null to use .X",
            )
        matrix = adata.layers[counts_layer]
        ok, why = _is_raw_counts(matrix)
        if not ok:
            _refuse(path, why, f"layer {counts_layer!r}", adata)
        return matrix, f"layer {counts_layer!r}"
    ok_x, why_x = _is_raw_counts(adata.X)
    if ok_x:
        return adata.X, ".X"
    if "NaN" in why_x:  # missing values are a data problem, not normalised counts
        raise DeconflowError(path, f"{why_x} in the counts matrix (.X)", "remove or impute the missing values before running deconflow")
    if adata.raw is not None:
        ok_raw, why_raw = _is_raw_counts(adata.raw.X)
        if ok_raw:
            if adata.raw.n_vars != adata.n_vars or not np.array_equal(adata.raw.var_names, adata.var_names):
                log.info("reference: .X is not raw counts (%s); using .raw.X (%d genes)", why_x, adata.raw.n_vars)
            else:
                log.info("reference: .X is not raw counts (%s); using .raw.X", why_x)
            return adata.raw.X, ".raw.X"
        why_x += f"; .raw.X has {why_raw}"
    else:
        why_x += "; there is no .raw"
    _refuse(path, why_x, ".X", adata)


def _refuse(path, why: str, where: str, adata) -> None:
    fix = ("give raw UMI/read counts: set `counts_layer` to the layer with raw counts "
           f"(layers: {list(adata.layers.keys())}), or store them in .X or .raw")
    raise DeconflowError(
        path,
        f"{why.split(';')[0]} in the counts matrix ({where}{'; ' + why.split(';', 1)[1].strip() if ';' in why else ''}); "
        "deconflow needs raw counts to build CPM pseudobulk (looked in `counts_layer`, .X, .raw.X)",
        fix,
    )


def read_label_table(labels_path, label_key: str, donor_key: str | None, matrix_path, barcodes) -> tuple[pd.Series, pd.Series | None]:
    """Labels (and donors) per barcode of the matrix; NaN where the table has no label."""
    labels_path = Path(labels_path)
    fix_layout = f"give `labels` as a CSV/TSV with the barcode first (or a `barcode` column) and a `{label_key}` column"
    if not labels_path.exists():
        raise DeconflowError(labels_path, "label table does not exist", "check `labels` in the dataset config")
    table = read_table(labels_path, "label table", fix_layout, header=True)
    barcode_column = "barcode" if "barcode" in table.columns else table.columns[0]
    if label_key not in table.columns or label_key == barcode_column:
        raise DeconflowError(labels_path, f"label column {label_key!r} not found in the label table (columns: {list(table.columns)[:10]})",
                             f"set `label_key` to the column with cell-type labels, or add it ({fix_layout})")
    if donor_key and donor_key not in table.columns:
        raise DeconflowError(labels_path, f"donor column {donor_key!r} not found in the label table (columns: {list(table.columns)[:10]})",
                             "set `donor_key` to the donor column of the label table, or null")
    table = table.set_index(barcode_column)
    _check_unique(table.index, "barcodes", labels_path, "give each barcode one row")
    unknown = table.index.difference(pd.Index(barcodes))
    if len(unknown):
        raise DeconflowError(
            labels_path,
            f"{len(unknown)} barcodes of the label table are not in the matrix {matrix_path} (e.g. {unknown[:3].tolist()})",
            "give the label table of this Cell Ranger run (barcodes as in barcodes.tsv.gz, with their -1 suffix)",
        )
    labels = table[label_key].reindex(barcodes)
    donors = table[donor_key].reindex(barcodes) if donor_key else None
    return labels, donors


def _duplicate_merge(features: np.ndarray, path) -> tuple[sp.csr_matrix | None, np.ndarray]:
    """The 0/1 matrix (features x unique symbols) summing features of one symbol, in the order
    of first appearance, and the unique symbols; (None, features) when all are unique."""
    unique, inverse = np.unique(features, return_inverse=True)
    if len(unique) == len(features):
        return None, features
    # keep the first occurrence's order: sort unique names by where they first appear
    first = np.full(len(unique), len(features))
    np.minimum.at(first, inverse, np.arange(len(features)))
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    columns = rank[inverse]
    merge = sp.csr_matrix((np.ones(len(features), dtype=np.float32), (np.arange(len(features)), columns)),
                          shape=(len(features), len(unique)))
    n_dup = len(features) - len(unique)
    n_names = int((np.bincount(columns) > 1).sum())
    log.info("reference %s: %d gene symbols are shared by %d features; their counts were summed (%d features left)",
             path, n_names, n_dup + n_names, len(unique))
    return merge, unique[order]


def _sum_duplicate_features(counts: sp.csr_matrix, features: np.ndarray, path) -> tuple[sp.csr_matrix, np.ndarray]:
    merge, features = _duplicate_merge(features, path)
    return (counts, features) if merge is None else (sp.csr_matrix(counts @ merge), features)


def _obs_column(adata, key: str, path, what: str, fix: str) -> pd.Series:
    if key not in adata.obs.columns:
        raise DeconflowError(path, f"{what} column {key!r} not found in .obs (columns: {list(adata.obs.columns)})", fix)
    return adata.obs[key]


def read_any_reference(
    path,
    label_key: str = "cell_type",
    counts_layer: str | None = None,
    donor_key: str | None = None,
    labels: str | None = None,
    gene_column: str | None = None,
) -> Reference:
    """Read an h5ad, a Cell Ranger ``.h5`` or a 10x matrix folder (see the module docstring)."""
    path = Path(path)
    kind = reference_kind(path)
    adata = _read_anndata(path, kind)
    if kind != "h5ad" and not labels:
        raise DeconflowError(path, "a 10x matrix has no cell-type labels", f"set `labels` to a CSV/TSV of barcode and `{label_key}`")
    matrix, where = raw_counts(adata, path, counts_layer)
    var = adata.raw.var if where == ".raw.X" else adata.var
    var_names = adata.raw.var_names if where == ".raw.X" else adata.var_names
    if kind == "h5ad":
        _check_unique(var_names, "gene names", path, "make gene names unique (e.g. adata.var_names_make_unique())")
    _check_unique(adata.obs_names, "cell ids", path, "make cell ids unique (e.g. adata.obs_names_make_unique())")
    features, aliases, cell_labels, cell_donors, keep, column = _metadata(
        adata, var, var_names, path, label_key, donor_key, gene_column, labels)
    counts = sp.csr_matrix(matrix)[keep] if not keep.all() else sp.csr_matrix(matrix)
    counts, features = _sum_duplicate_features(counts.astype(np.float32), np.asarray(features, dtype=str), path)
    if aliases is not None:
        log.info("reference %s: gene symbols with Ensembl IDs (column %r) for %d features", path, column, aliases["feature"].nunique())
    counts.sort_indices()
    return Reference(
        counts=counts,
        cell_ids=adata.obs_names.to_numpy().astype(str)[keep],
        genes=features,
        labels=cell_labels.astype(str).to_numpy()[keep],
        donors=None if cell_donors is None else cell_donors.astype(str).to_numpy()[keep],
        path=str(path),
        gene_aliases=aliases,
    )


def _metadata(adata, var, var_names, path, label_key, donor_key, gene_column, labels):
    """Features, Ensembl aliases, labels, donors and the mask of labelled cells of a reference
    (``adata``: anything with ``obs`` and ``obs_names``)."""
    column = pick_gene_column(var, gene_column, path)
    features, aliases = canonical_genes(var_names, var[column] if column else None, column)
    if labels:
        cell_labels, cell_donors = read_label_table(labels, label_key, donor_key, path, adata.obs_names)
    else:
        cell_labels = _obs_column(adata, label_key, path, "label", "set `label_key` in the dataset config to the column holding cell-type labels")
        if cell_labels.isna().any():
            raise DeconflowError(path, f"{int(cell_labels.isna().sum())} cells have no label in {label_key!r}", "drop unlabelled cells")
        cell_donors = None
        if donor_key:
            cell_donors = _obs_column(adata, donor_key, path, "donor", "set `donor_key` to the donor column, or null to split cells within donors")
    keep = cell_labels.notna().to_numpy() & (cell_labels.astype(str).str.strip() != "").to_numpy()
    if labels:
        log.info("reference %s: %d of %d cells labelled in %s; %d unlabelled cells dropped",
                 path, int(keep.sum()), len(keep), labels, int((~keep).sum()))
        if not keep.any():
            raise DeconflowError(labels, f"no cell of {path} has a label in {label_key!r}", "give the label table of this matrix")
    return features, aliases, cell_labels, cell_donors, keep, column


def reference_gene_aliases(path, gene_column: str | None = None, counts_layer: str | None = None) -> pd.DataFrame | None:
    """The reference's (feature, ensembl_id) pairs, read from its gene annotation only (what
    deconvolution needs to match a bulk file by the reference's own Ensembl IDs)."""
    path = Path(path)
    kind = reference_kind(path)
    if kind == "h5ad":
        import anndata as ad

        try:
            adata = ad.read_h5ad(path, backed="r")
        except Exception as exc:
            raise DeconflowError(path, f"cannot be read as h5ad ({type(exc).__name__}: {exc})", "the file is truncated or corrupt; re-export it") from None
        try:
            use_raw = not counts_layer and adata.raw is not None and not _is_raw_counts(adata.X[: min(adata.n_obs, 500)])[0]
            var, var_names = (adata.raw.var, adata.raw.var_names) if use_raw else (adata.var, adata.var_names)
            var, var_names = var.copy(), var_names.copy()
        finally:
            adata.file.close()
    else:
        adata = _read_anndata(path, kind)
        var, var_names = adata.var, adata.var_names
    column = pick_gene_column(var, gene_column, path)
    _, aliases = canonical_genes(var_names, var[column] if column else None, column)
    return aliases


# --------------------------------------------------------------------------- lean (row-chunked) access
#: Rows of an h5ad's CSR matrix are read in contiguous ranges of about this many non-zeros
#: (16.8M: ~130 MB as int32 values + int32 column indices, ~200 MB with the float32 copy of
#: one chunk), and the raw-counts check reads the matrix's values in slices of the same length.
#: Every job that reads the reference then holds one chunk at a time, whatever the reference's
#: size; the per-row results (CPM, sums) do not depend on where chunks start.
CHUNK_NNZ = 1 << 24


class ReferenceSource:
    """A reference's metadata (cell ids, genes, labels, donors, Ensembl aliases) with its counts
    left on disk: ``chunks(rows)`` yields them a few rows at a time.

    h5ad files with a CSR matrix (what anndata writes for sparse data) are read lazily through
    anndata's backed sparse datasets (``anndata.io.sparse_dataset``: a row range is one read of
    ``data``/``indices``); other inputs (10x files, dense or CSC matrices) are read into memory
    once by ``read_any_reference`` and sliced from there. Counts come out as float32 CSR with
    features of one symbol summed, exactly as ``read_any_reference`` makes them.
    """

    def __init__(self, path, cell_ids, genes, labels, donors, gene_aliases, *, group=None, file_rows=None,
                 merge=None, counts=None):
        self.path = str(path)
        self.cell_ids = cell_ids
        self.genes = genes
        self.labels = labels
        self.donors = donors
        self.gene_aliases = gene_aliases
        self._group = group  # h5 path of the CSR matrix (lazy), or None (in memory)
        self._file_rows = file_rows  # file row of every kept cell (lazy)
        self._merge = merge  # features -> unique symbols (lazy, duplicated symbols only)
        self._counts = counts  # float32 CSR (in memory)

    @property
    def cell_types(self) -> list[str]:
        return sorted(pd.unique(self.labels).tolist())

    @property
    def n_cells(self) -> int:
        return len(self.cell_ids)

    @classmethod
    def from_reference(cls, reference: Reference) -> "ReferenceSource":
        return cls(reference.path, reference.cell_ids, reference.genes, reference.labels, reference.donors,
                   reference.gene_aliases, counts=reference.counts)

    def chunks(self, rows=None, chunk_nnz: int = CHUNK_NNZ):
        """Yield ``(positions, counts)`` over the cells ``rows`` (increasing indices into
        ``cell_ids``; None: all cells): ``positions`` index ``rows``, ``counts`` is their float32
        CSR (cells x genes, sorted indices), in the order of ``rows``. One chunk spans a row
        range of the file with at most ``chunk_nnz`` non-zeros (or a single row)."""
        rows = np.arange(self.n_cells) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(rows) and np.any(np.diff(rows) <= 0):
            raise ValueError("rows must be increasing")
        if self._group is None:
            per_row = max(1, self._counts.nnz // max(1, self._counts.shape[0]))
            step = max(1, chunk_nnz // per_row)
            for start in range(0, len(rows), step):
                positions = np.arange(start, min(len(rows), start + step))
                yield positions, self._counts[rows[positions]]
            return
        import anndata as ad
        import h5py

        file_rows = self._file_rows[rows]
        with h5py.File(self.path, "r") as h5:
            group = h5[self._group]
            indptr = group["indptr"][:]
            matrix = ad.io.sparse_dataset(group)
            start = 0
            while start < len(file_rows):
                first = int(file_rows[start])
                # the file's rows first..stop-1 hold at most chunk_nnz non-zeros (at least one row)
                stop = max(first + 1, int(np.searchsorted(indptr, indptr[first] + chunk_nnz, side="right")) - 1)
                end = int(np.searchsorted(file_rows, stop, side="left"))
                try:
                    block = sp.csr_matrix(matrix[first:stop])
                except Exception as exc:  # a damaged chunk of the file
                    raise DeconflowError(self.path, f"cannot be read as h5ad (rows {first}-{stop - 1}: {type(exc).__name__}: {exc})",
                                         "the file is truncated or corrupt; re-export or re-download it") from None
                wanted = file_rows[start:end] - first
                if len(wanted) != stop - first:
                    block = block[wanted]
                block = block.astype(np.float32)
                if self._merge is not None:
                    block = sp.csr_matrix(block @ self._merge)
                block.sort_indices()
                yield np.arange(start, end), block
                start = end

    def counts(self, rows=None) -> sp.csr_matrix:
        """The float32 CSR counts of ``rows`` (all cells when None), read chunk by chunk."""
        if self._group is None:
            return self._counts if rows is None else self._counts[np.asarray(rows)]
        blocks = [block for _, block in self.chunks(rows)]
        if not blocks:
            return sp.csr_matrix((0, len(self.genes)), dtype=np.float32)
        return sp.csr_matrix(sp.vstack(blocks, format="csr"))

    def load(self) -> Reference:
        """The whole reference in memory (what ``read_any_reference`` returns)."""
        return Reference(counts=self.counts(), cell_ids=self.cell_ids, genes=self.genes, labels=self.labels,
                         donors=self.donors, path=self.path, gene_aliases=self.gene_aliases)


def _check_counts_chunked(data, chunk: int = CHUNK_NNZ) -> tuple[bool, str]:
    """``_is_raw_counts`` over an h5py dataset of values, read ``chunk`` values at a time (the
    same verdict and message, without full-size temporaries)."""
    integer = np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.bool_)
    n_bad, negative, fractional = 0, False, False
    for start in range(0, data.shape[0], chunk):
        values = data[start : start + chunk]
        if integer:
            negative = negative or bool(values.min() < 0)
            continue
        finite = np.isfinite(values)
        if not finite.all():
            n_bad += int((~finite).sum())
            continue
        negative = negative or bool(values.min() < 0)
        fractional = fractional or not np.all(np.equal(np.mod(values, 1), 0))
    if n_bad:
        return False, f"{n_bad} NaN/inf values"
    if negative:
        return False, "negative values"
    if fractional:
        return False, "non-integer values"
    return True, ""


def _is_csr_group(node) -> bool:
    import h5py

    return isinstance(node, h5py.Group) and node.attrs.get("encoding-type") in ("csr_matrix", b"csr_matrix")


def _lean_matrix(h5, path: Path, counts_layer):
    """(obs, var, raw var, h5 path of the raw counts, where they were found) of an open h5ad,
    or None when its counts matrix is not CSR; raw counts checked chunk by chunk."""
    from anndata.io import read_elem

    layers = list(h5["layers"].keys()) if "layers" in h5 else []
    candidates = [f"layers/{counts_layer}"] if counts_layer else ["X", "raw/X"]
    if not all(_is_csr_group(h5.get(name)) for name in candidates if name in h5):
        return None
    shim = SimpleNamespace(layers={name: None for name in layers})
    obs = read_elem(h5["obs"])
    var = read_elem(h5["var"])
    raw_var = read_elem(h5["raw/var"]) if "raw/var" in h5 else None
    if counts_layer:
        if counts_layer not in layers:
            raise DeconflowError(path, f"counts layer {counts_layer!r} not found (layers: {layers})",
                                 "set `counts_layer` to the layer with raw counts, or null to use .X")
        ok, why = _check_counts_chunked(h5[f"layers/{counts_layer}/data"])
        if not ok:
            _refuse(path, why, f"layer {counts_layer!r}", shim)
        group, where = f"layers/{counts_layer}", f"layer {counts_layer!r}"
    else:
        ok_x, why_x = _check_counts_chunked(h5["X/data"])
        group, where = "X", ".X"
        if not ok_x:
            if "NaN" in why_x:
                raise DeconflowError(path, f"{why_x} in the counts matrix (.X)", "remove or impute the missing values before running deconflow")
            if "raw/X" not in h5:
                _refuse(path, why_x + "; there is no .raw", ".X", shim)
            ok_raw, why_raw = _check_counts_chunked(h5["raw/X/data"])
            if not ok_raw:
                _refuse(path, why_x + f"; .raw.X has {why_raw}", ".X", shim)
            if len(raw_var) != len(var) or not np.array_equal(raw_var.index, var.index):
                log.info("reference: .X is not raw counts (%s); using .raw.X (%d genes)", why_x, len(raw_var))
            else:
                log.info("reference: .X is not raw counts (%s); using .raw.X", why_x)
            group, where = "raw/X", ".raw.X"
    return obs, var, raw_var, group, where


def _lean_h5ad(path: Path, label_key, counts_layer, donor_key, gene_column, labels):
    """The h5ad's ReferenceSource with its counts on disk, or None when its counts matrix is not
    CSR (then the reference is read into memory)."""
    import h5py

    if not path.exists():
        raise DeconflowError(path, "reference file does not exist", "check `reference` in the config")
    try:
        h5 = h5py.File(path, "r")
    except Exception as exc:
        raise DeconflowError(path, f"cannot be read as h5ad ({type(exc).__name__}: {exc})",
                             "the file is truncated or corrupt; re-export or re-download it") from None
    with h5:
        try:
            found = _lean_matrix(h5, path, counts_layer)
        except DeconflowError:
            raise
        except Exception as exc:  # h5py/anndata raise many types for a corrupt file
            raise DeconflowError(path, f"cannot be read as h5ad ({type(exc).__name__}: {exc})",
                                 "the file is truncated or corrupt; re-export or re-download it") from None
    if found is None:
        return None
    obs, var, raw_var, group, where = found
    if where == ".raw.X":
        var = raw_var
    obs_names, var_names = obs.index.astype(str), var.index.astype(str)
    _check_unique(var_names, "gene names", path, "make gene names unique (e.g. adata.var_names_make_unique())")
    _check_unique(obs_names, "cell ids", path, "make cell ids unique (e.g. adata.obs_names_make_unique())")
    meta = _metadata(SimpleNamespace(obs=obs, obs_names=obs_names), var, var_names, path, label_key, donor_key, gene_column, labels)
    features, aliases, cell_labels, cell_donors, keep, column = meta
    merge, features = _duplicate_merge(np.asarray(features, dtype=str), path)
    if aliases is not None:
        log.info("reference %s: gene symbols with Ensembl IDs (column %r) for %d features", path, column, aliases["feature"].nunique())
    return ReferenceSource(
        path, obs_names.to_numpy().astype(str)[keep], features, cell_labels.astype(str).to_numpy()[keep],
        None if cell_donors is None else cell_donors.astype(str).to_numpy()[keep], aliases,
        group=group, file_rows=np.flatnonzero(keep), merge=merge,
    )


def open_reference(
    path,
    label_key: str = "cell_type",
    counts_layer: str | None = None,
    donor_key: str | None = None,
    labels: str | None = None,
    gene_column: str | None = None,
) -> ReferenceSource:
    """The reference as a ``ReferenceSource``: validated like ``read_any_reference`` (raw counts
    checked chunk by chunk, same errors), its counts read only when asked for, a chunk at a time
    (h5ad with a CSR matrix; other inputs are read into memory)."""
    path = Path(path)
    if reference_kind(path) == "h5ad":
        source = _lean_h5ad(path, label_key, counts_layer, donor_key, gene_column, labels)
        if source is not None:
            return source
    return ReferenceSource.from_reference(read_any_reference(path, label_key, counts_layer, donor_key, labels, gene_column))


def read_reference(
    path: str | Path,
    label_key: str = "cell_type",
    counts_layer: str | None = None,
    donor_key: str | None = None,
    labels: str | None = None,
    gene_column: str | None = None,
) -> Reference:
    """Read a reference (h5ad, Cell Ranger ``.h5`` or 10x matrix folder) and validate that it
    holds raw integer counts; see ``open_reference``. The counts are read a chunk
    of rows at a time (h5ad), so the file's integer matrix and its float32 copy are never held
    at once."""
    return open_reference(path, label_key, counts_layer, donor_key, labels=labels, gene_column=gene_column).load()


def write_reference_h5ad(
    counts: sp.csr_matrix, cell_ids, genes, labels, path: str | Path, label_key: str = "cell_type"
) -> None:
    import anndata as ad

    adata = ad.AnnData(
        X=sp.csr_matrix(counts, dtype=np.int32),
        obs=pd.DataFrame({label_key: pd.Categorical(np.asarray(labels, dtype=str))}, index=pd.Index(cell_ids, dtype=str)),
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
    )
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
