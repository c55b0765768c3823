"""Reading and writing: provenance checks on mixture files, atomic outputs, bulk and reference
validation."""

import gzip

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deconflow.errors import DeconflowError, StaleDataError
from deconflow.io import MIXTURE_FORMAT_VERSION, atomic_path, read_bulk, read_mixtures, read_reference, write_mixtures


# --------------------------------------------------------------------------- mixtures
def _write_small_mixtures(path, **attrs):
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 100, size=(3, 5))
    proportions = rng.dirichlet(np.ones(2), size=3)
    write_mixtures(
        path,
        features=features,
        proportions=proportions,
        feature_names=[f"g{i}" for i in range(5)],
        cell_types=["T", "B"],
        sample_ids=["s0", "s1", "s2"],
        attrs={"normalization": "cpm", **attrs},
    )
    return features, proportions


def test_mixture_round_trip_keeps_arrays_and_attrs(tmp_path):
    path = tmp_path / "train.h5"
    generator = {"n_samples": 3, "seed": 7, "sparsity": {"min_types": 1}}
    rng = np.random.default_rng(0)
    coverage = rng.integers(0, 30, size=(3, 5))
    features = rng.uniform(0, 100, size=(3, 5)).astype(np.float32)
    proportions = rng.dirichlet(np.ones(2), size=3)
    write_mixtures(
        path,
        features=features,
        proportions=proportions,
        feature_names=["g0", "g1", "g2", "g3", "g4"],
        cell_types=["T", "B"],
        sample_ids=["s0", "s1", "s2"],
        attrs={"normalization": "cpm", "generator": generator, "source": "ref.h5ad", "splits": ["train", "val"]},
        extra={"coverage": coverage},
    )
    mix = read_mixtures(path, expect_normalization="cpm")
    np.testing.assert_array_equal(mix.features, features)
    np.testing.assert_array_equal(mix.proportions, proportions)
    assert mix.feature_names.tolist() == ["g0", "g1", "g2", "g3", "g4"]
    assert mix.cell_types.tolist() == ["T", "B"]
    assert mix.sample_ids.tolist() == ["s0", "s1", "s2"]
    np.testing.assert_array_equal(mix.extra["coverage"], coverage)
    assert mix.attrs["generator"] == generator and isinstance(mix.attrs["generator"], dict)
    assert mix.attrs["splits"] == ["train", "val"]
    assert mix.attrs["source"] == "ref.h5ad"
    assert mix.attrs["log_transformed"] is False
    assert mix.attrs["format_version"] == MIXTURE_FORMAT_VERSION
    assert mix.normalization == "cpm"


def test_log_transformed_mixtures_are_refused_naming_the_rule(tmp_path):
    path = tmp_path / "train.h5"
    _write_small_mixtures(path, log_transformed=True)
    with pytest.raises(StaleDataError) as info:
        read_mixtures(path, expect_normalization="cpm")
    message = str(info.value)
    assert str(path) in message
    assert "make_pseudobulk" in message
    assert "log" in message


def test_normalization_mismatch_is_refused(tmp_path):
    path = tmp_path / "betas.h5"
    _write_small_mixtures(path, normalization="beta")
    with pytest.raises(StaleDataError) as info:
        read_mixtures(path, expect_normalization="cpm")
    assert str(path) in str(info.value)
    assert "'beta'" in str(info.value) and "'cpm'" in str(info.value)
    # read as what it is, it is accepted
    assert read_mixtures(path, expect_normalization="beta").normalization == "beta"


def test_other_format_version_is_refused(tmp_path):
    path = tmp_path / "old.h5"
    _write_small_mixtures(path, format_version=MIXTURE_FORMAT_VERSION + 1)
    with pytest.raises(StaleDataError) as info:
        read_mixtures(path)
    assert str(path) in str(info.value)
    assert "format_version" in str(info.value)


def test_corrupt_hdf5_raises_deconflow_error(tmp_path):
    path = tmp_path / "corrupt.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(DeconflowError) as info:
        read_mixtures(path)
    assert str(path) in str(info.value)
    assert "corrupt" in str(info.value)


def test_truncated_hdf5_raises_deconflow_error(tmp_path):
    good = tmp_path / "good.h5"
    _write_small_mixtures(good)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(DeconflowError) as info:
        read_mixtures(truncated)
    assert str(truncated) in str(info.value)


def test_missing_mixture_file_raises_deconflow_error(tmp_path):
    with pytest.raises(DeconflowError, match="does not exist"):
        read_mixtures(tmp_path / "nope.h5")


# --------------------------------------------------------------------------- atomic output
def test_atomic_path_leaves_nothing_when_body_raises(tmp_path):
    target = tmp_path / "out" / "table.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_text("half written")
            raise RuntimeError("job killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file either


def test_atomic_path_keeps_existing_target_on_failure(tmp_path):
    target = tmp_path / "table.tsv"
    target.write_text("previous good output\n")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("new but incomplete")
            raise KeyboardInterrupt
    assert target.read_text() == "previous good output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.tsv"]


def test_atomic_path_replaces_target_on_success(tmp_path):
    target = tmp_path / "table.tsv"
    target.write_text("old\n")
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.tsv"]


# --------------------------------------------------------------------------- bulk
@pytest.fixture
def bulk_frame():
    rng = np.random.default_rng(4)
    return pd.DataFrame(
        rng.uniform(0, 1000, size=(6, 3)),
        index=pd.Index([f"GENE{i}" for i in range(6)], name="gene"),
        columns=["sampleA", "sampleB", "sampleC"],
    )


@pytest.mark.parametrize("name, sep", [("bulk.tsv", "\t"), ("bulk.csv", ","), ("bulk.tsv.gz", "\t"), ("bulk.csv.gz", ",")])
def test_read_bulk_round_trip(tmp_path, bulk_frame, name, sep):
    path = tmp_path / name
    bulk_frame.to_csv(path, sep=sep)
    if name.endswith(".gz"):
        with gzip.open(path) as fh:  # really compressed
            fh.read(1)
    df = read_bulk(path)
    assert df.index.tolist() == bulk_frame.index.tolist()
    assert df.columns.tolist() == bulk_frame.columns.tolist()
    np.testing.assert_allclose(df.to_numpy(), bulk_frame.to_numpy(), rtol=1e-15)
    assert all(dtype == np.float64 for dtype in df.dtypes)


def _bulk_error(path) -> str:
    with pytest.raises(DeconflowError) as info:
        read_bulk(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_read_bulk_empty_file(tmp_path):
    path = tmp_path / "bulk.tsv"
    path.write_text("")
    assert "empty" in _bulk_error(path)


def test_read_bulk_header_only(tmp_path):
    path = tmp_path / "bulk.tsv"
    path.write_text("gene\ts1\ts2\n")
    assert "no data rows" in _bulk_error(path)


def test_read_bulk_truncated_h5ad(tmp_path, bulk_frame):
    path = tmp_path / "bulk.h5ad"
    ad.AnnData(bulk_frame.T.astype(np.float32)).write_h5ad(path)
    path.write_bytes(path.read_bytes()[:200])
    message = _bulk_error(path)
    assert "truncated" in message and "Fix: the file is truncated or corrupt" in message


def test_read_bulk_missing_file(tmp_path):
    assert "does not exist" in _bulk_error(tmp_path / "absent.tsv")


def test_read_bulk_non_numeric_column(tmp_path):
    path = tmp_path / "bulk.tsv"
    path.write_text("gene\ts1\ts2\nG1\t1\thigh\nG2\t2\t3\n")
    message = _bulk_error(path)
    assert "non-numeric" in message and "s2" in message


@pytest.mark.parametrize("bad", ["NA", "nan", "inf", "-inf"])
def test_read_bulk_nan_or_inf(tmp_path, bad):
    path = tmp_path / "bulk.tsv"
    path.write_text(f"gene\ts1\ts2\nG1\t1\t{bad}\nG2\t2\t3\n")
    assert "NaN/inf" in _bulk_error(path)


def test_read_bulk_duplicate_gene_ids(tmp_path):
    path = tmp_path / "bulk.tsv"
    path.write_text("gene\ts1\ts2\nG1\t1\t2\nG2\t2\t3\nG1\t4\t5\n")
    message = _bulk_error(path)
    assert "duplicate" in message and "G1" in message


def test_read_bulk_duplicate_sample_ids(tmp_path):
    # pandas renames a repeated header to "s1.1"; the reader must still see the duplicate
    path = tmp_path / "bulk.tsv"
    path.write_text("gene\ts1\ts2\ts1\nG1\t1\t2\t3\nG2\t2\t3\t4\n")
    message = _bulk_error(path)
    assert "duplicate sample ids" in message and "s1" in message


def test_read_bulk_duplicate_sample_ids_csv_gz(tmp_path):
    path = tmp_path / "bulk.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("gene,s1,s1\nG1,1,2\n")
    assert "duplicate sample ids" in _bulk_error(path)


# --------------------------------------------------------------------------- reference
def _adata(X=None, n_cells=6, n_genes=4, label_key="cell_type", layers=None) -> ad.AnnData:
    rng = np.random.default_rng(8)
    if X is None:
        X = rng.poisson(3.0, size=(n_cells, n_genes)).astype(np.float32)
    n_cells, n_genes = X.shape
    obs = pd.DataFrame(
        {label_key: pd.Categorical(["T", "B", "NK"] * (n_cells // 3))},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"GENE{j}" for j in range(n_genes)])
    adata = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=var)
    for name, layer in (layers or {}).items():
        adata.layers[name] = sp.csr_matrix(layer)
    return adata


def _reference_error(adata, path, **kwargs) -> str:
    adata.write_h5ad(path)
    with pytest.raises(DeconflowError) as info:
        read_reference(path, **kwargs)
    assert str(path) in str(info.value)
    return str(info.value)


def test_read_reference_valid(tmp_path):
    adata = _adata()
    path = tmp_path / "ref.h5ad"
    adata.write_h5ad(path)
    ref = read_reference(path)
    np.testing.assert_array_equal(ref.counts.toarray(), adata.X.toarray())
    assert ref.labels.tolist() == ["T", "B", "NK", "T", "B", "NK"]
    assert ref.cell_ids.tolist() == [f"cell{i}" for i in range(6)]
    assert ref.genes.tolist() == ["GENE0", "GENE1", "GENE2", "GENE3"]
    assert ref.cell_types == ["B", "NK", "T"]


def test_read_reference_missing_label_column(tmp_path):
    message = _reference_error(_adata(label_key="celltype"), tmp_path / "ref.h5ad", label_key="cell_type")
    assert "'cell_type'" in message and "label_key" in message


def test_read_reference_negative_counts(tmp_path):
    X = np.ones((6, 4), dtype=np.float32)
    X[2, 1] = -1
    assert "negative" in _reference_error(_adata(X), tmp_path / "ref.h5ad")


def test_read_reference_non_integer_counts(tmp_path):
    X = np.ones((6, 4), dtype=np.float32)
    X[0, 0] = 0.5
    message = _reference_error(_adata(X), tmp_path / "ref.h5ad")
    assert "non-integer" in message and "counts_layer" in message


@pytest.mark.filterwarnings("ignore:Variable names are not unique")
def test_read_reference_duplicate_gene_names(tmp_path):
    adata = _adata()
    adata.var_names = ["GENE0", "GENE1", "GENE0", "GENE3"]
    message = _reference_error(adata, tmp_path / "ref.h5ad")
    assert "duplicate gene names" in message and "GENE0" in message


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_read_reference_duplicate_cell_ids(tmp_path):
    adata = _adata()
    adata.obs_names = ["cell0", "cell1", "cell2", "cell3", "cell1", "cell5"]
    message = _reference_error(adata, tmp_path / "ref.h5ad")
    assert "duplicate cell ids" in message and "cell1" in message


def test_read_reference_missing_counts_layer(tmp_path):
    message = _reference_error(_adata(), tmp_path / "ref.h5ad", counts_layer="counts")
    assert "'counts'" in message and "layer" in message


def test_read_reference_counts_layer_selection(tmp_path):
    rng = np.random.default_rng(9)
    raw = rng.poisson(4.0, size=(6, 4)).astype(np.float32)
    raw[:, 0] += 1  # no empty cells
    normalised = np.log1p(raw / raw.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
    adata = _adata(normalised, layers={"counts": raw})
    path = tmp_path / "ref.h5ad"
    # .X holds normalised (non-integer) data: refused without the layer...
    assert "non-integer" in _reference_error(adata, path)
    # ...and read from the layer it gives the raw counts
    ref = read_reference(path, counts_layer="counts")
    np.testing.assert_array_equal(ref.counts.toarray(), raw)


def test_read_reference_corrupt_file(tmp_path):
    path = tmp_path / "ref.h5ad"
    path.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(DeconflowError) as info:
        read_reference(path)
    assert str(path) in str(info.value) and "corrupt" in str(info.value)


def test_atomic_outputs_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644
