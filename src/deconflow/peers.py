"""Published deconvolution tools ("peers") run beside deconflow's models, each in its own venv.

A peer's pins clash with ours (rectanglepy pins ``scipy==1.13.0``, ``numpy<2``, ``anndata<0.10.9``),
so deconflow never imports one: every peer has an exact pin file ``envs/peers/<peer>.txt``, a
virtual environment built from it (:func:`build_env`), and a thin script
``workflow/scripts/peer_<peer>.py`` that calls the tool's public API inside that environment. This
module holds what runs on deconflow's side of that boundary:

- the peers' specifications (:data:`PEERS`): which reference a peer takes, which units its output
  is in, which extra columns it reports;
- the environments (:func:`build_env`, :func:`env_python`);
- the inputs handed to the peer scripts (:func:`write_peer_reference`, :func:`write_peer_bulk`,
  :func:`match_bulk_to_reference`): plain h5ad files that any anndata version reads;
- the conversion of a peer's raw output to deconflow's proportions (:func:`to_cell_fractions`):
  samples x the reference's cell types, cell fractions, rows summing to 1;
- :func:`run_peer`, the whole chain outside Snakemake (benchmarks, notebooks).

Units. deconflow's RNA models report *cell* fractions calibrated to the reference's mean library
size per type L_k (``deconflow.models.nnls``). Rectangle reports cell fractions through its own
mRNA-bias factors (mean number of expressed genes per type) plus an ``Unknown`` share; the
``Unknown`` column is dropped and the known types renormalised (identical to Rectangle's own
``correct_unknown_fraction=False``). dtangle estimates the *mRNA* share of each type in the scale
of its reference profiles (per-type mean CPM); it is converted to cell fractions with the same L_k
deconflow's models use, p_k ∝ m_k / L_k, and a bulk's ``cell_mrna`` table is then applied as for
deconflow's models (``deconflow.cell_content``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import DeconflowError
from .io import atomic_path, write_table

log = logging.getLogger(__name__)

#: the project root when deconflow is installed from its checkout (``pip install -e .``)
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PIN_DIR = PROJECT_ROOT / "envs" / "peers"
SCRIPT_DIR = PROJECT_ROOT / "workflow" / "scripts"
#: where `make run` keeps the peers' environments (config key `peer_env_dir`)
DEFAULT_ENV_DIR = Path(".peers")
#: obs column of the reference handed to peers, and the uns key listing deconflow's type order
LABEL_COLUMN = "cell_type"
CELL_TYPES_KEY = "deconflow_cell_types"


@dataclass(frozen=True)
class PeerSpec:
    """What deconflow needs to know about one peer.

    ``reference``: ``cells`` (the peer builds its own signature from single-cell raw counts, once
    per dataset, step ``signature`` of its script) or ``profiles`` (the peer takes per-type mean
    CPM profiles of the reference cells, genes x types TSV). ``units``: ``cell`` (the peer's output
    are cell fractions) or ``mrna`` (mRNA shares, converted with the reference's library sizes).
    ``dropped_columns``: extra output columns that are not reference types (dropped, then the
    row is renormalised).
    """

    name: str
    package: str
    reference: str
    units: str
    dropped_columns: tuple[str, ...] = ()
    citation: str = ""

    @property
    def script(self) -> Path:
        return SCRIPT_DIR / f"peer_{self.name}.py"


PEERS: dict[str, PeerSpec] = {
    "rectangle": PeerSpec(
        name="rectangle",
        package="rectanglepy==1.7.0",
        reference="cells",
        units="cell",
        dropped_columns=("Unknown",),
        citation="Eder et al. (2026), Rectangle, bioRxiv 10.64898/2026.07.07.736950",
    ),
    "dtangle": PeerSpec(
        name="dtangle",
        package="dtangle==0.1.1",
        reference="profiles",
        units="mrna",
        citation="Hunt et al. (2019), dtangle, Bioinformatics 35:2093",
    ),
}


def peer_spec(name: str) -> PeerSpec:
    if name not in PEERS:
        raise DeconflowError(None, f"unknown peer {name!r}", f"use one of {sorted(PEERS)}")
    return PEERS[name]


# --------------------------------------------------------------------------- environments
def pin_file(name: str, pin_dir: str | Path = PIN_DIR) -> Path:
    return Path(pin_dir) / f"{peer_spec(name).name}.txt"


def read_pins(path: str | Path) -> dict[str, str]:
    """{package: version} of a pin file; every non-comment line must be ``name==version``."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip() or any(c in version for c in "<>=!~*, "):
            raise DeconflowError(path, f"line {number} ({raw.strip()!r}) is not an exact pin",
                                 "write every package as name==version (the whole environment, transitive packages too)")
        pins[name.strip().lower().replace("_", "-")] = version.strip()
    if not pins:
        raise DeconflowError(path, "no pins", "list the peer's environment as name==version lines")
    return pins


def env_root(env_dir: str | Path, name: str) -> Path:
    return Path(env_dir) / peer_spec(name).name


def env_python(env_dir: str | Path, name: str) -> Path:
    """The interpreter of a peer's venv (``<env_dir>/<peer>/venv/bin/python``)."""
    return env_root(env_dir, name) / "venv" / "bin" / "python"


def env_stamp(env_dir: str | Path, name: str) -> Path:
    """Written last by :func:`build_env` (the venv's ``pip freeze``): the environment is complete."""
    return env_root(env_dir, name) / "installed.txt"


def _run_logged(cmd: list[str], log_file, what: str, name: str, pins) -> None:
    log_file.write(f"$ {' '.join(cmd)}\n")
    log_file.flush()
    proc = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise DeconflowError(pins, f"environment of peer {name} cannot be built: {what} exited with {proc.returncode} "
                                   f"(log {log_file.name})",
                             "check network access to PyPI and that every pin exists for this Python; the log has pip's message")


def build_env(name: str, pins: str | Path, env_dir: str | Path, log_path: str | Path | None = None,
              python: str | None = None) -> Path:
    """(Re)build the venv of peer ``name`` from its exact pins; return the stamp file.

    ``python -m venv`` (``python``: this interpreter by default), then ``pip install --no-deps -r
    pins`` (so nothing outside the pins is installed) and ``pip check`` (so the pins are complete
    and consistent). The stamp (``pip freeze``) is written last: a half-built environment has none.
    Network access is needed here only. Raises DeconflowError naming the pin file and the log.
    """
    spec = peer_spec(name)
    read_pins(pins)  # refuse anything but exact pins before touching the network
    root = env_root(env_dir, name)
    venv = root / "venv"
    stamp = env_stamp(env_dir, name)
    stamp.unlink(missing_ok=True)
    if venv.exists():
        shutil.rmtree(venv)
    root.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else root / "build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    interpreter = str(env_python(env_dir, name))
    with open(log_path, "w") as log_file:
        _run_logged([python or sys.executable, "-m", "venv", str(venv)], log_file, "python -m venv", spec.name, pins)
        pip = [interpreter, "-m", "pip", "--disable-pip-version-check"]
        _run_logged(pip + ["install", "--no-deps", "-r", str(pins)], log_file, "pip install", spec.name, pins)
        _run_logged(pip + ["check"], log_file, "pip check", spec.name, pins)
        freeze = subprocess.run(pip + ["freeze"], capture_output=True, text=True, check=True).stdout
    with atomic_path(stamp) as tmp:
        tmp.write_text(freeze)
    return stamp


def ensure_env(name: str, env_dir: str | Path = DEFAULT_ENV_DIR, pin_dir: str | Path = PIN_DIR) -> Path:
    """The peer's interpreter, building its venv first if it is missing or older than its pins."""
    pins = pin_file(name, pin_dir)
    stamp = env_stamp(env_dir, name)
    if not stamp.exists() or stamp.stat().st_mtime < pins.stat().st_mtime:
        log.info("building the environment of peer %s from %s in %s", name, pins, env_root(env_dir, name))
        build_env(name, pins, env_dir)
    return env_python(env_dir, name)


# --------------------------------------------------------------------------- inputs for the peers
def cap_cells_per_type(labels, max_cells: int | None, seed: int) -> np.ndarray:
    """Positions (increasing) of the cells kept when every cell type keeps at most ``max_cells``
    cells: a type with ``n <= max_cells`` cells keeps all of them, a larger one ``max_cells``
    drawn uniformly without replacement. ``labels``: one per cell (n_cells,); ``max_cells``: None
    keeps every cell. Seeded per type (``numpy.random.default_rng([seed, crc32(type)])``), so a
    type's draw depends on the seed and on that type's cells only, not on the other types. A
    stratified subsample as single-cell deconvolution tools take for their signatures (e.g.
    CIBERSORTx's and Capybara's cells per type); ``peer_max_cells_per_type`` in config/README.md."""
    import zlib

    labels = np.asarray(labels, dtype=str)
    if max_cells is None:
        return np.arange(len(labels))
    if int(max_cells) < 1:
        raise ValueError(f"max_cells must be at least 1 (got {max_cells})")
    keep = np.zeros(len(labels), dtype=bool)
    for cell_type in sorted(pd.unique(labels).tolist()):
        where = np.flatnonzero(labels == cell_type)
        if len(where) > int(max_cells):
            rng = np.random.default_rng([int(seed), zlib.crc32(cell_type.encode())])
            where = where[rng.choice(len(where), size=int(max_cells), replace=False)]
        keep[where] = True
    return np.flatnonzero(keep)


def write_peer_reference(counts, labels, genes, cell_ids, cell_types, path: str | Path) -> None:
    """Reference cells for a peer that builds its own signature: h5ad, cells x genes raw integer
    counts (CSR, float32), ``obs['cell_type']``, and ``uns['deconflow_cell_types']`` (deconflow's
    type order, which the peer's output columns follow). ``counts``: one matrix, or an iterable of
    CSR blocks of consecutive cells (``ReferenceSource.chunks``), written one block at a time."""
    blocks = [counts] if sp.issparse(counts) or isinstance(counts, np.ndarray) else counts
    write_peer_reference_blocks(blocks, labels, genes, cell_ids, cell_types, path)


def write_peer_reference_blocks(blocks, labels, genes, cell_ids, cell_types, path: str | Path) -> int:
    """:func:`write_peer_reference` from CSR blocks (cells x genes, consecutive cells in the order
    of ``cell_ids``), appended to the file one at a time (anndata ``write_elem`` then
    ``sparse_dataset.append``), so only one block is in memory. The file reads the same as an
    ``AnnData.write_h5ad`` of the whole matrix (same elements and dtypes) whatever the blocks'
    sizes. Returns the number of non-zeros; fewer or more rows than ``cell_ids`` is a ValueError
    (and no file)."""
    import anndata as ad
    import h5py
    from anndata.io import sparse_dataset, write_elem

    # obs and var as AnnData.write_h5ad stores them (its strings_to_categoricals: labels categorical)
    shell = ad.AnnData(obs=pd.DataFrame({LABEL_COLUMN: np.asarray(labels, dtype=str)}, index=pd.Index(np.asarray(cell_ids, dtype=str))),
                       var=pd.DataFrame(index=pd.Index(np.asarray(genes, dtype=str))))
    shell.strings_to_categoricals()
    obs, var = shell.obs, shell.var
    rows = nnz = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["encoding-type"] = "anndata"
        h5.attrs["encoding-version"] = "0.1.0"
        write_elem(h5, "obs", obs)
        write_elem(h5, "var", var)
        write_elem(h5, "uns", {CELL_TYPES_KEY: np.asarray(cell_types, dtype=str)})
        for name in ("obsm", "varm", "obsp", "varp", "layers"):
            write_elem(h5, name, {})
        for block in blocks:
            block = sp.csr_matrix(block, dtype=np.float32)
            if block.shape[1] != len(var):
                raise ValueError(f"a block has {block.shape[1]} genes, not {len(var)}")
            if not block.shape[0]:
                continue
            if "X" not in h5:  # anndata writes sparse data resizable (maxshape None): later blocks append
                write_elem(h5, "X", block)
            else:
                sparse_dataset(h5["X"]).append(block)
            rows += block.shape[0]
            nnz += block.nnz
        if "X" not in h5:
            write_elem(h5, "X", sp.csr_matrix((0, len(var)), dtype=np.float32))
        if rows != len(obs):
            raise ValueError(f"the blocks hold {rows} cells, not the {len(obs)} cell ids given")
    return nnz


def write_train_pool_reference(reference, rows, gene_mask, path: str | Path, max_cells_per_type: int | None = None,
                               seed: int = 0, chunk_nnz: int | None = None) -> dict:
    """Rule ``peer_reference``: the cells ``rows`` of ``reference`` (a ``deconflow.io.ReferenceSource``;
    increasing positions, the train pool), at most ``max_cells_per_type`` of each type
    (:func:`cap_cells_per_type` with ``seed``), on the genes of ``gene_mask`` (bool, one per
    reference gene), written to ``path`` by :func:`write_peer_reference_blocks` while read a chunk of
    rows at a time (``chunk_nnz`` non-zeros, default ``CHUNK_NNZ``): the reference's counts are never
    whole in memory, and the file is the same for any ``chunk_nnz``. Returns ``{"kept": {type: n},
    "available": {type: n}, "cells": n, "genes": n, "nnz": n}``."""
    from .io.references import CHUNK_NNZ

    rows = np.asarray(rows, dtype=np.int64)
    labels = reference.labels[rows]
    kept_rows = rows[cap_cells_per_type(labels, max_cells_per_type, seed)]
    genes = np.flatnonzero(np.asarray(gene_mask, dtype=bool))
    blocks = (block[:, genes] for _, block in reference.chunks(kept_rows, chunk_nnz or CHUNK_NNZ))
    nnz = write_peer_reference_blocks(blocks, reference.labels[kept_rows], reference.genes[genes], reference.cell_ids[kept_rows],
                                      reference.cell_types, path)
    count = lambda values: {t: int((values == t).sum()) for t in reference.cell_types}  # noqa: E731
    return {"kept": count(reference.labels[kept_rows]), "available": count(labels), "cells": len(kept_rows),
            "genes": len(genes), "nnz": nnz}


def write_peer_bulk(values, sample_ids, genes, path: str | Path) -> None:
    """Samples to deconvolve: h5ad, samples x genes, linear CPM over the genes given (float64)."""
    import anndata as ad

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape != (len(sample_ids), len(genes)):
        raise ValueError(f"bulk values {values.shape} do not match {len(sample_ids)} samples x {len(genes)} genes")
    totals = values.sum(axis=1, keepdims=True)
    if np.any(totals <= 0) or not np.all(np.isfinite(values)) or values.min() < 0:
        raise DeconflowError(path, "samples without counts, or negative / missing values", "give non-negative linear values for every gene")
    adata = ad.AnnData(
        X=values / totals * 1e6,
        obs=pd.DataFrame(index=pd.Index(np.asarray(sample_ids, dtype=str))),
        var=pd.DataFrame(index=pd.Index(np.asarray(genes, dtype=str))),
    )
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)


def write_profiles(profiles: pd.DataFrame, path: str | Path) -> None:
    """Per-type mean CPM profiles (genes x cell types) for a peer with ``reference='profiles'``."""
    write_table(profiles, path)


def match_bulk_to_reference(bulk_path, reference_genes, min_overlap: int, bulk_format=None, quantity: str = "counts",
                            gene_table=None, reference=None, gene_column=None, counts_layer=None, tx2gene=None) -> pd.DataFrame:
    """A bulk file of any accepted format (``deconflow.io.bulks``) as genes x samples, its
    genes matched to the reference's (symbols or Ensembl IDs, as for deconflow's models); too few
    matches is an error naming the file. Values stay as read (linear; log-scaled input refused)."""
    from .io.bulks import expand_bulk_paths, read_rna_bulk
    from .io.genes import match_bulk_genes, overlap_fix, read_gene_table
    from .normalize import looks_log_scaled
    from .io.references import reference_gene_aliases

    bulk, _ = read_rna_bulk(bulk_path, None if bulk_format == "auto" else bulk_format, quantity, tx2gene)
    paths = expand_bulk_paths(bulk_path)
    source = paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"
    aliases = reference_gene_aliases(reference, gene_column, counts_layer) if reference else None
    table = read_gene_table(gene_table) if gene_table else None
    matched, match = match_bulk_genes(bulk, np.asarray(reference_genes, dtype=str), aliases, table)
    for line in match.log_lines(source):
        log.info("%s", line)
    if match.n_matched < min_overlap:
        raise DeconflowError(source, f"only {match.n_matched} of {match.n_model_features} reference genes are in the bulk file "
                                     f"({match.describe_sides()}); at least {min_overlap} are required", overlap_fix(match))
    matched = matched.dropna(how="any")
    if looks_log_scaled(matched.to_numpy(dtype=np.float64)):
        raise DeconflowError(source, "bulk values look log-scaled (negative, or max ≤ 50); mixtures are only linear in linear space",
                             "give raw counts, TPM or CPM (undo the log transform, e.g. 2**x - 1)")
    return matched


# --------------------------------------------------------------------------- outputs of the peers
def read_raw_output(path: str | Path) -> pd.DataFrame:
    """A peer script's output: CSV, samples x the peer's own columns, sample ids first."""
    table = pd.read_csv(path, index_col=0, dtype={0: str})
    table.index = table.index.astype(str)
    table.columns = table.columns.astype(str)
    return table


def to_cell_fractions(raw: pd.DataFrame, name: str, cell_types, library_size=None, cell_content=None,
                      source=None) -> pd.DataFrame:
    """A peer's raw output -> deconflow's proportions: samples x ``cell_types`` (that order), cell
    fractions, rows summing to 1.

    Columns in the peer's ``dropped_columns`` (Rectangle's ``Unknown``) are dropped and the row
    renormalised; reference types the peer did not report are 0; any other column is an error
    (the peer was given another reference). ``mrna`` peers (dtangle) are divided by
    ``library_size`` (the reference's mean UMIs per cell of each type, in ``cell_types`` order)
    before renormalising, as deconflow's linear fit does (``linear_fit.cell_fractions``).
    ``cell_content`` (a bulk's ``cell_mrna`` values, NaN where unlisted) then converts to the bulk's
    mRNA per cell exactly as for deconflow's models (``deconflow.cell_content``); it needs
    ``library_size``. A row with missing values, negative values or no mass is an error naming
    ``source``.
    """
    from .cell_content import to_bulk_cell_fractions

    spec = peer_spec(name)
    cell_types = [str(t) for t in cell_types]
    extra = [c for c in raw.columns if c not in cell_types and c not in spec.dropped_columns]
    if extra:
        raise DeconflowError(source, f"peer {name} reported columns {extra} that are not reference cell types {cell_types}",
                             "rerun the peer's jobs (its reference changed)")
    values = raw.reindex(columns=cell_types, fill_value=0.0).to_numpy(dtype=np.float64)
    bad = ~np.all(np.isfinite(values), axis=1) | np.any(values < -1e-9, axis=1) | (values.sum(axis=1) <= 0)
    if bad.any():
        samples = raw.index[bad].tolist()
        raise DeconflowError(source, f"peer {name} returned no valid proportions for samples {samples[:5]} "
                                     f"({int(bad.sum())} of {len(bad)}: missing, negative or all zero)",
                             f"see the peer's log; {name} could not fit these samples")
    values = np.clip(values, 0.0, None)
    if spec.units == "mrna":
        if library_size is None:
            raise ValueError(f"peer {name} reports mRNA shares: library_size is needed to convert them to cell fractions")
        values = values / np.asarray(library_size, dtype=np.float64)[None, :]
    elif spec.units != "cell":
        raise ValueError(f"unknown units {spec.units!r} of peer {name}")
    values = values / values.sum(axis=1, keepdims=True)
    if cell_content is not None:
        if library_size is None:
            raise ValueError("cell_content needs library_size (the reference's size per type)")
        if spec.units == "mrna":
            values = to_bulk_cell_fractions(values, library_size, cell_content)
        else:
            log.info("peer %s reports its own cell fractions (its own mRNA-bias correction): `cell_mrna` is not applied", name)
    return pd.DataFrame(values, index=pd.Index(raw.index, name="sample_id"), columns=cell_types)


def train_pool_cells(reference_path, split_path=None, label_key: str = "cell_type", counts_layer: str | None = None,
                     labels: str | None = None, gene_column: str | None = None):
    """The reference cells a pipeline run gives the peers, as an AnnData for :func:`run_peer`:
    raw counts (``.X``, CSR) and ``obs['cell_type']``; with ``split_path`` (a run's
    ``results/{dataset}/split/cells.tsv``) only the train pool, as in the pipeline."""
    import anndata as ad

    from .io import read_reference
    from .split import read_split

    reference = read_reference(reference_path, label_key, counts_layer, labels=labels, gene_column=gene_column)
    keep = np.ones(len(reference.cell_ids), dtype=bool)
    if split_path is not None:
        keep = read_split(split_path, reference.cell_ids) == "train"
    return ad.AnnData(X=sp.csr_matrix(reference.counts[keep]),
                      obs=pd.DataFrame({LABEL_COLUMN: reference.labels[keep].astype(str)},
                                       index=pd.Index(reference.cell_ids[keep].astype(str))),
                      var=pd.DataFrame(index=pd.Index(reference.genes.astype(str))))


# --------------------------------------------------------------------------- the peer scripts
def peer_command(name: str, python: str | Path, step: str, *args: str) -> list[str]:
    """Command line of a peer script step (``signature`` or ``deconvolve``) under ``python``."""
    return [str(python), str(peer_spec(name).script), step, *map(str, args)]


def run_script(name: str, python: str | Path, step: str, *args: str, log_path: str | Path) -> None:
    """Run one step of a peer script; its failure is one DeconflowError line naming peer and log."""
    cmd = peer_command(name, python, step, *args, "--log", log_path)
    with open(log_path, "w") as log_file:
        proc = subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONNOUSERSITE": "1", "PYTHONPATH": "", "PYTHONHASHSEED": "0"})
    if proc.returncode != 0:
        lines = Path(log_path).read_text().strip().splitlines()
        raise DeconflowError(log_path, f"peer {name} failed ({step}): {lines[-1] if lines else 'no output'}",
                             "read the log; check the inputs the peer was given")


def run_peer(name: str, reference, bulk, out_csv: str | Path, *, label_key: str = "cell_type",
             counts_layer: str | None = None, env_dir: str | Path = DEFAULT_ENV_DIR, threads: int = 2,
             cell_mrna: str | Path | None = None, work_dir: str | Path | None = None,
             settings: dict | None = None) -> pd.DataFrame:
    """Run peer ``name`` on ``bulk`` with ``reference`` cells, outside Snakemake; write and return
    its proportions (samples x reference cell types, cell fractions, rows summing to 1).

    ``reference``: an AnnData or an h5ad path of single cells with raw integer counts (``.X``, or
    ``counts_layer``) and labels in ``obs[label_key]`` — the cells the peer learns from (the
    pipeline gives the train pool). ``bulk``: a genes x samples DataFrame or any bulk file deconflow
    reads (``deconflow.io.bulks``), genes named as the reference's (symbols), linear values
    (counts, TPM or CPM: renormalised to CPM over the shared genes). ``cell_mrna``: the bulk's
    mRNA-per-cell table (applied to mRNA-share peers only, see the module docstring). The peer's
    venv is built under ``env_dir`` if missing or older than its pin file (network access then).
    Intermediate files go to ``work_dir`` (a temporary folder by default; logs are kept there).
    ``settings``: keyword arguments for the peer's public function (config ``peer_settings``).
    Errors (bad input, the peer's own exception) raise DeconflowError naming the peer and the log.
    """
    import json

    import anndata as ad

    from .cell_content import read_cell_mrna
    from .signature import cell_type_library_size, cell_type_mean_cpm

    spec = peer_spec(name)
    adata = ad.read_h5ad(reference) if isinstance(reference, (str, Path)) else reference
    counts = sp.csr_matrix(adata.layers[counts_layer] if counts_layer else adata.X)
    labels = np.asarray(adata.obs[label_key], dtype=str)
    genes = np.asarray(adata.var_names, dtype=str)
    cell_types = sorted(pd.unique(labels).tolist())
    table = bulk if isinstance(bulk, pd.DataFrame) else match_bulk_to_reference(bulk, genes, 1)
    table = table.groupby(level=0).sum() if not table.index.is_unique else table
    shared = pd.Index(genes).intersection(table.index.astype(str))
    if len(shared) == 0:
        raise DeconflowError(None, f"the bulk shares no gene with the reference of peer {name}", "name genes as the reference does")
    library_size = cell_type_library_size(counts, labels, cell_types).to_numpy(dtype=np.float64)
    content = read_cell_mrna(cell_mrna, cell_types) if cell_mrna else None
    python = ensure_env(name, env_dir)
    # a temporary folder is removed after a success only: a failure's message names its log there
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix=f"deconflow-peer-{name}-"))
    work.mkdir(parents=True, exist_ok=True)
    bulk_file = work / "bulk.h5ad"
    write_peer_bulk(table.loc[shared].to_numpy(dtype=np.float64).T, table.columns.astype(str), shared, bulk_file)
    settings_json = json.dumps(settings or {})
    if spec.reference == "cells":
        keep = np.isin(genes, shared)
        write_peer_reference(counts[:, keep], labels, genes[keep], adata.obs_names, cell_types, work / "reference.h5ad")
        reference_file = work / "signature.pkl"
        run_script(name, python, "signature", "--reference", work / "reference.h5ad", "--out", reference_file,
                   "--threads", threads, "--settings", settings_json, log_path=work / "signature.log")
    else:
        reference_file = work / "profiles.tsv"
        write_profiles(cell_type_mean_cpm(counts, labels, genes, cell_types), reference_file)
    raw_file = work / "raw.csv"
    run_script(name, python, "deconvolve", "--reference", reference_file, "--bulk", bulk_file, "--out", raw_file,
               "--threads", threads, "--settings", settings_json, log_path=work / "deconvolve.log")
    proportions = to_cell_fractions(read_raw_output(raw_file), name, cell_types, library_size, content, source=raw_file)
    if work_dir is None:
        shutil.rmtree(work)
    write_table(proportions, out_csv)
    return proportions


def main(argv=None) -> int:
    """``python -m deconflow.peers build-env PEER PINS ENV_DIR [--log LOG]`` (rule peer_env)."""
    import argparse
    import time

    from .logs import script_logging

    parser = argparse.ArgumentParser(prog="python -m deconflow.peers", description="Build a peer's venv from its exact pins.")
    parser.add_argument("command", choices=["build-env"])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("pins")
    parser.add_argument("env_dir")
    parser.add_argument("--log", help="this step's log; pip's output goes to LOG.pip")
    args = parser.parse_args(argv)
    with script_logging(args.log) as logger:
        start = time.monotonic()
        pip_log = f"{args.log}.pip" if args.log else None
        logger.info("building the venv of peer %s from %s in %s (pip output: %s)", args.peer, args.pins,
                    env_root(args.env_dir, args.peer) / "venv", pip_log or env_root(args.env_dir, args.peer) / "build.log")
        build_env(args.peer, args.pins, args.env_dir, log_path=pip_log)
        logger.info("environment of peer %s built in %.0f s", args.peer, time.monotonic() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
