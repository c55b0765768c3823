"""deconflow.peers on deconflow's side of the boundary: pins, inputs, conversion of a peer's output."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from deconflow.errors import DeconflowError
from deconflow.peers import PEERS, PIN_DIR, read_pins, to_cell_fractions, write_peer_bulk, write_peer_reference

TYPES = ["B cells", "Monocytes", "T cells"]


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_pin_file_is_exact_and_names_the_peer_package(peer):
    pins = read_pins(PIN_DIR / f"{peer}.txt")
    package, version = PEERS[peer].package.split("==")
    assert pins[package] == version
    assert "deconflow" not in pins and "torch" not in pins  # the peer's room holds the peer only


@pytest.mark.parametrize("peer", sorted(PEERS))
def test_conda_env_has_the_same_pins(peer):
    env = yaml.safe_load((PIN_DIR / f"{peer}.yaml").read_text())
    pip_entries = next(e["pip"] for e in env["dependencies"] if isinstance(e, dict))
    conda_pins = {n.lower().replace("_", "-"): v for n, _, v in (e.partition("==") for e in pip_entries)}
    assert conda_pins == read_pins(PIN_DIR / f"{peer}.txt")
    assert "python=3.11" in env["dependencies"]


def test_loose_pins_are_refused(tmp_path):
    pins = tmp_path / "peer.txt"
    pins.write_text("numpy==1.26.4\nscipy>=1.10\n")
    with pytest.raises(DeconflowError, match="line 2.*not an exact pin"):
        read_pins(pins)


def test_rectangle_unknown_is_dropped_missing_types_are_zero_and_rows_renormalised():
    raw = pd.DataFrame({"Monocytes": [0.3, 0.1], "B cells": [0.1, 0.5], "Unknown": [0.6, 0.4]}, index=["s1", "s2"])
    out = to_cell_fractions(raw, "rectangle", TYPES)
    assert list(out.columns) == TYPES and list(out.index) == ["s1", "s2"]
    np.testing.assert_allclose(out.to_numpy(), [[0.25, 0.75, 0.0], [5 / 6, 1 / 6, 0.0]])


def test_mrna_shares_become_cell_fractions_with_the_reference_library_sizes():
    cells = np.array([[0.2, 0.3, 0.5]])
    sizes = np.array([2000.0, 6000.0, 1500.0])  # UMIs per cell
    mrna = cells * sizes / (cells * sizes).sum()
    raw = pd.DataFrame(mrna, columns=TYPES, index=["s1"])
    np.testing.assert_allclose(to_cell_fractions(raw, "dtangle", TYPES, sizes).to_numpy(), cells)
    # a bulk's cell_mrna table then acts as for deconflow's models: p ∝ m / c
    content = np.array([1.0, 3.0, np.nan])  # T cells unlisted: the geometric-mean factor of the listed types
    converted = to_cell_fractions(raw, "dtangle", TYPES, sizes, content).to_numpy()[0]
    factor = np.exp(np.mean(np.log(sizes[:2] / content[:2])))
    expected = cells[0] * np.array([sizes[0] / 1.0, sizes[1] / 3.0, factor])
    np.testing.assert_allclose(converted, expected / expected.sum())


def test_rectangle_cell_fractions_are_not_converted_again_by_cell_mrna():
    raw = pd.DataFrame([[0.2, 0.3, 0.5, 0.0]], columns=TYPES + ["Unknown"], index=["s1"])
    out = to_cell_fractions(raw, "rectangle", TYPES, np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(out.to_numpy(), [[0.2, 0.3, 0.5]])


def test_failed_samples_and_foreign_columns_are_errors_naming_the_file():
    raw = pd.DataFrame({"B cells": [0.5, np.nan], "T cells": [0.5, np.nan]}, index=["ok", "bad"])
    with pytest.raises(DeconflowError, match=r"raw\.csv: peer rectangle returned no valid proportions for samples \['bad'\]"):
        to_cell_fractions(raw, "rectangle", TYPES, source="raw.csv")
    raw = pd.DataFrame({"B cells": [0.5], "Neutrophils": [0.5]}, index=["s1"])
    with pytest.raises(DeconflowError, match="Neutrophils"):
        to_cell_fractions(raw, "dtangle", TYPES, np.ones(3), source="raw.csv")


def test_peer_inputs_are_plain_h5ad(tmp_path):
    import anndata as ad
    import scipy.sparse as sp

    write_peer_bulk(np.array([[1.0, 3.0], [2.0, 2.0]]), ["s1", "s2"], ["g1", "g2"], tmp_path / "bulk.h5ad")
    bulk = ad.read_h5ad(tmp_path / "bulk.h5ad")
    np.testing.assert_allclose(bulk.X, [[2.5e5, 7.5e5], [5e5, 5e5]])
    assert list(bulk.obs_names) == ["s1", "s2"] and list(bulk.var_names) == ["g1", "g2"]
    with pytest.raises(DeconflowError, match="without counts"):
        write_peer_bulk(np.array([[0.0, 0.0]]), ["s1"], ["g1", "g2"], tmp_path / "empty.h5ad")
    assert not (tmp_path / "empty.h5ad").exists()
    write_peer_reference(sp.csr_matrix([[1, 0], [0, 2]]), ["T cells", "B cells"], ["g1", "g2"], ["c1", "c2"],
                         ["B cells", "T cells"], tmp_path / "ref.h5ad")
    ref = ad.read_h5ad(tmp_path / "ref.h5ad")
    assert ref.obs["cell_type"].tolist() == ["T cells", "B cells"]
    assert list(ref.uns["deconflow_cell_types"]) == ["B cells", "T cells"]


def test_peer_scripts_never_import_deconflow():
    for spec in PEERS.values():
        text = Path(spec.script).read_text()
        assert "deconflow" not in "".join(line for line in text.splitlines() if line.lstrip().startswith(("import", "from")))


# --------------------------------------------------------------------------- peer_reference: streamed, capped
def _counts_reference(tmp_path, n_per_type, n_genes=40, seed=3):
    """An h5ad of random raw counts with n_per_type[t] cells of type t, types interleaved."""
    from deconflow.io import write_reference_h5ad

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(list(n_per_type), list(n_per_type.values())))
    counts = sp.random(len(labels), n_genes, density=0.3, format="csr", random_state=seed,
                       data_rvs=lambda k: rng.integers(1, 50, size=k)).astype(np.int32)
    path = tmp_path / "reference.h5ad"
    write_reference_h5ad(counts, [f"c{i:04d}" for i in range(len(labels))], [f"g{j:02d}" for j in range(n_genes)], labels, path)
    return path, counts, labels


def test_cap_keeps_min_of_n_and_cap_per_type_seeded_and_leaves_small_types_whole():
    from deconflow.peers import cap_cells_per_type

    labels = np.repeat(["B cells", "Monocytes", "NK cells", "T cells"], [5, 300, 40, 1000])
    labels = labels[np.random.default_rng(0).permutation(len(labels))]
    kept = cap_cells_per_type(labels, 40, seed=42)
    assert np.all(np.diff(kept) > 0)
    counts = pd.Series(labels[kept]).value_counts().to_dict()
    assert counts == {"B cells": 5, "Monocytes": 40, "NK cells": 40, "T cells": 40}
    for small in ("B cells", "NK cells"):  # at or below the cap: every cell, untouched
        assert set(np.flatnonzero(labels == small)) <= set(kept)
    np.testing.assert_array_equal(kept, cap_cells_per_type(labels, 40, seed=42))
    assert not np.array_equal(kept, cap_cells_per_type(labels, 40, seed=7))
    # a type's draw depends on its own cells only: dropping another type leaves it as it was
    without_b = np.flatnonzero(labels != "B cells")
    again = without_b[cap_cells_per_type(labels[without_b], 40, seed=42)]
    np.testing.assert_array_equal(kept[labels[kept] == "T cells"], again[labels[again] == "T cells"])
    np.testing.assert_array_equal(cap_cells_per_type(labels, None, seed=42), np.arange(len(labels)))
    np.testing.assert_array_equal(cap_cells_per_type(labels, 10_000, seed=42), np.arange(len(labels)))
    with pytest.raises(ValueError, match="at least 1"):
        cap_cells_per_type(labels, 0, seed=42)


@pytest.mark.parametrize("cap", [None, 7])
def test_peer_reference_is_the_same_for_any_chunk_size(tmp_path, cap):
    import anndata as ad

    from deconflow.io import open_reference
    from deconflow.peers import write_train_pool_reference

    path, counts, labels = _counts_reference(tmp_path, {"B cells": 4, "Monocytes": 25, "T cells": 31})
    source = open_reference(path)
    assert source._group is not None  # the lean (on-disk) reader, as for an atlas
    rows = np.flatnonzero(np.arange(len(labels)) % 3 != 0)  # a train pool
    genes = np.arange(counts.shape[1]) % 4 != 1
    files = {}
    for chunk_nnz in (1, 13, 97, 1 << 24):
        files[chunk_nnz] = tmp_path / f"peers_{chunk_nnz}.h5ad"
        summary = write_train_pool_reference(source, rows, genes, files[chunk_nnz], cap, seed=5, chunk_nnz=chunk_nnz)
    reads = {k: ad.read_h5ad(v) for k, v in files.items()}
    whole = reads[1 << 24]
    for other in reads.values():
        assert other.obs_names.tolist() == whole.obs_names.tolist()
        assert other.obs["cell_type"].tolist() == whole.obs["cell_type"].tolist()
        assert other.var_names.tolist() == whole.var_names.tolist()
        assert other.X.dtype == np.float32 and (other.X != whole.X).nnz == 0
    # the cells are the train pool's (capped), with their own counts on the kept genes
    kept = np.array([int(c[1:]) for c in whole.obs_names])
    assert set(kept) <= set(rows)
    np.testing.assert_array_equal(whole.X.toarray(), counts[kept][:, genes].toarray())
    np.testing.assert_array_equal(whole.obs["cell_type"].to_numpy(), labels[kept])
    expected = pd.Series(labels[rows]).value_counts()
    if cap:
        expected = expected.clip(upper=cap)
    assert whole.obs["cell_type"].value_counts().to_dict() == expected.to_dict() == {k: v for k, v in summary["kept"].items() if v}
    assert summary["cells"] == len(kept) and summary["genes"] == int(genes.sum()) and summary["nnz"] == whole.X.nnz
    assert list(whole.uns["deconflow_cell_types"]) == ["B cells", "Monocytes", "T cells"]


def test_peer_reference_blocks_refuse_a_wrong_number_of_cells(tmp_path):
    from deconflow.peers import write_peer_reference_blocks

    with pytest.raises(ValueError, match="2 cells, not the 3"):
        write_peer_reference_blocks([sp.csr_matrix(np.eye(2))], ["a", "b", "a"], ["g1", "g2"], ["c1", "c2", "c3"], ["a", "b"],
                                    tmp_path / "x.h5ad")
    assert not (tmp_path / "x.h5ad").exists() and not list(tmp_path.iterdir())
