"""Mixture files (HDF5), signatures and per-type library sizes.

Mixture files carry their provenance as attributes, and readers refuse files made under another
normalisation or format with a message naming the rule to rerun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import DeconflowError, StaleDataError
from .files import _check_finite, atomic_path
from .tables import read_numeric_table

#: Bump when the layout of mixture files changes; readers refuse other versions.
MIXTURE_FORMAT_VERSION = 1

#: Which rule makes mixture files of each modality (named in "rerun" messages).
PRODUCER_RULE = {"cpm": "make_pseudobulk", "beta": "simulate_methylation"}


@dataclass
class MixtureSet:
    """Mixtures with known proportions: the unit the models train and are evaluated on."""

    features: np.ndarray  # samples x features, float32 (CPM for RNA, beta for methylation)
    proportions: np.ndarray  # samples x cell types, rows sum to 1
    feature_names: np.ndarray
    cell_types: np.ndarray
    sample_ids: np.ndarray
    attrs: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # optional extra matrices (e.g. coverage)

    @property
    def normalization(self) -> str:
        return str(self.attrs.get("normalization"))


def write_mixtures(
    path: str | Path,
    features: np.ndarray,
    proportions: np.ndarray,
    feature_names,
    cell_types,
    sample_ids,
    attrs: dict,
    extra: dict | None = None,
) -> None:
    """Write a mixture file. ``attrs`` must at least say ``normalization``."""
    import h5py

    if "normalization" not in attrs:
        raise ValueError("attrs must include 'normalization'")
    all_attrs = {
        "log_transformed": False,
        "format_version": MIXTURE_FORMAT_VERSION,
        "library_version": __version__,
        **attrs,
    }
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("features", data=np.asarray(features, dtype=np.float32), compression="gzip", compression_opts=1)
            h5.create_dataset("proportions", data=np.asarray(proportions, dtype=np.float64))
            str_dt = h5py.string_dtype()
            h5.create_dataset("feature_names", data=np.asarray(feature_names, dtype=object), dtype=str_dt)
            h5.create_dataset("cell_types", data=np.asarray(cell_types, dtype=object), dtype=str_dt)
            h5.create_dataset("sample_ids", data=np.asarray(sample_ids, dtype=object), dtype=str_dt)
            for key, value in (extra or {}).items():
                h5.create_dataset(f"extra/{key}", data=np.asarray(value), compression="gzip", compression_opts=1)
            for key, value in all_attrs.items():
                h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def read_mixtures(path: str | Path, expect_normalization: str | None = "cpm") -> MixtureSet:
    """Read a mixture file, refusing data written under another normalisation/format."""
    import h5py

    path = Path(path)
    rule = PRODUCER_RULE.get(expect_normalization or "", "the rule that made it")
    rerun = f"delete it and rerun `snakemake --forcerun {rule}` so it is regenerated"
    try:
        h5 = h5py.File(path, "r")
    except FileNotFoundError:
        raise DeconflowError(path, "mixture file does not exist", f"run `snakemake --forcerun {rule}`") from None
    except Exception as exc:
        raise DeconflowError(path, f"cannot be read as HDF5 ({type(exc).__name__}); truncated or corrupt", rerun) from None
    with h5:
        attrs = {k: _decode(v) for k, v in h5.attrs.items()}
        if attrs.get("format_version") != MIXTURE_FORMAT_VERSION:
            raise StaleDataError(
                path, f"format_version is {attrs.get('format_version')!r}, this deconflow reads {MIXTURE_FORMAT_VERSION}", rerun
            )
        if attrs.get("log_transformed") is not False and attrs.get("log_transformed") != 0:
            raise StaleDataError(
                path,
                "mixtures are log-transformed; the signature equation S·p ≈ bulk only holds in linear space",
                rerun,
            )
        if expect_normalization is not None and attrs.get("normalization") != expect_normalization:
            raise StaleDataError(
                path,
                f"normalization is {attrs.get('normalization')!r}, expected {expect_normalization!r}",
                rerun,
            )
        try:
            extra = {k: h5["extra"][k][()] for k in h5["extra"]} if "extra" in h5 else {}
            mix = MixtureSet(
                features=h5["features"][()],
                proportions=h5["proportions"][()],
                feature_names=h5["feature_names"].asstr()[()],
                cell_types=h5["cell_types"].asstr()[()],
                sample_ids=h5["sample_ids"].asstr()[()],
                attrs=attrs,
                extra=extra,
            )
        except (KeyError, OSError) as exc:
            raise DeconflowError(path, f"incomplete mixture file ({exc})", rerun) from None
    return mix


def read_signature(path: str | Path) -> pd.DataFrame:
    """Signature TSV (features x cell types, linear scale) as written by build_signature."""
    path = Path(path)
    if not path.exists():
        raise DeconflowError(path, "signature file is missing; every model is built from it", "run the signature rule first (`snakemake --forcerun build_signature`)")
    signature = read_numeric_table(path, "signature", "rerun `snakemake --forcerun build_signature`")
    values = signature.to_numpy(dtype=np.float64)
    _check_finite(values, path, "the signature")
    if values.size == 0 or values.min() < 0:
        raise DeconflowError(path, "signature is empty or has negative entries", "rerun `snakemake --forcerun build_signature`")
    sizes_path = path.with_name(LIBRARY_SIZE_FILE)
    if sizes_path.exists():
        signature.attrs["cell_library_size"] = read_library_size(sizes_path, signature.columns)
    detection_path = path.with_name(DETECTION_FILE)
    if detection_path.exists():
        signature.attrs["detection"] = read_detection(detection_path, signature)
    return signature


#: Written by build_signature next to signature.tsv: mean library size (UMIs per cell) per type.
LIBRARY_SIZE_FILE = "cell_library_size.tsv"
#: Written by build_signature next to signature.tsv: genes x types share of train cells with ≥ 1 count.
DETECTION_FILE = "detection.tsv"


def read_detection(path: str | Path, signature: pd.DataFrame) -> pd.DataFrame:
    """Per-gene, per-type detection rates (0-1) with the signature's genes and types."""
    fix = "rerun `snakemake --forcerun build_signature`"
    table = read_numeric_table(path, "detection rates", fix)
    values = table.to_numpy(dtype=np.float64)
    if not table.index.equals(signature.index) or [str(c) for c in table.columns] != [str(c) for c in signature.columns]:
        raise DeconflowError(path, "detection rates do not have the signature's genes and cell types", fix)
    if values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
        raise DeconflowError(path, "detection rates outside [0, 1]", fix)
    return table


def read_library_size(path: str | Path, cell_types) -> pd.Series:
    """Per-type mean library size, in the order of ``cell_types`` (all positive and finite)."""
    sizes = read_numeric_table(path, "library sizes", "rerun `snakemake --forcerun build_signature`").iloc[:, 0]
    missing = [t for t in map(str, cell_types) if t not in sizes.index]
    if missing:
        raise DeconflowError(path, f"no library size for cell types {missing}", "rerun `snakemake --forcerun build_signature`")
    sizes = sizes.loc[list(map(str, cell_types))].astype(np.float64)
    if not np.all(np.isfinite(sizes.to_numpy())) or (sizes <= 0).any():
        raise DeconflowError(path, "library sizes must be positive and finite", "rerun `snakemake --forcerun build_signature`")
    return sizes
