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
  for matching bulk files (``deconflow.genes``). Several Ensembl IDs sharing a symbol are summed.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import DeconflowError
from .tables import read_table
from .genes import canonical_genes, pick_gene_column
from .io import Reference, _check_unique

log = logging.getLogger(__name__)

MTX_FILES = ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz")


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


def _sum_duplicate_features(counts: sp.csr_matrix, features: np.ndarray, path) -> tuple[sp.csr_matrix, np.ndarray]:
    unique, inverse = np.unique(features, return_inverse=True)
    if len(unique) == len(features):
        return counts, features
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
    return sp.csr_matrix(counts @ merge), unique[order]


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
