"""deconflow.peers on deconflow's side of the boundary: pins, inputs, conversion of a peer's output."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
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
