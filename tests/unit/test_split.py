"""Train/val/test splits of reference cells: stratified by type, or whole donors held out."""

import numpy as np
import pandas as pd
import pytest

from deconflow.errors import DeconflowError
from deconflow.split import SPLITS, read_split, split_cells

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.fixture
def labels():
    rng = np.random.default_rng(1)
    labels = np.array(["T"] * 40 + ["B"] * 61 + ["NK"] * 7 + ["Mono"] * 100)
    return labels[rng.permutation(len(labels))]


def test_stratified_split_every_type_in_every_split_with_sizes_near_fractions(labels):
    splits = split_cells(labels, FRACTIONS, seed=0)
    assert splits.shape == labels.shape
    assert set(splits) == set(SPLITS)
    for cell_type in np.unique(labels):
        members = splits[labels == cell_type]
        n = len(members)
        for split in SPLITS:
            size = int((members == split).sum())
            assert size >= 1, (cell_type, split)
            assert abs(size - FRACTIONS[split] * n) < 1, (cell_type, split, size, n)


def test_stratified_split_deterministic_with_seed_and_changes_with_another(labels):
    first = split_cells(labels, FRACTIONS, seed=42)
    again = split_cells(labels, FRACTIONS, seed=42)
    other = split_cells(labels, FRACTIONS, seed=43)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # the per-type sizes do not depend on the seed, only which cells go where
    for cell_type in np.unique(labels):
        sel = labels == cell_type
        assert sorted(first[sel]) == sorted(other[sel])


def test_min_cells_per_split_is_honoured():
    labels = np.array(["A"] * 9 + ["B"] * 50)
    splits = split_cells(labels, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0, min_cells_per_split=3)
    for split in SPLITS:
        assert (splits[labels == "A"] == split).sum() >= 3


def test_donor_split_keeps_each_donor_in_one_split():
    rng = np.random.default_rng(2)
    donors = rng.choice([f"donor{d}" for d in range(10)], size=300)
    labels = rng.choice(["T", "B", "NK"], size=300)
    splits = split_cells(labels, FRACTIONS, seed=5, donors=donors)
    assert set(splits) == set(SPLITS)
    per_donor = pd.DataFrame({"donor": donors, "split": splits}).groupby("donor")["split"].nunique()
    assert (per_donor == 1).all()
    # 10 donors at 60/20/20 -> 6/2/2 donors
    donors_per_split = pd.Series(dict(zip(donors, splits))).value_counts()
    assert donors_per_split.to_dict() == {"train": 6, "val": 2, "test": 2}


def test_donor_split_needs_three_donors():
    with pytest.raises(DeconflowError, match="only 2 donors"):
        split_cells(np.array(["T"] * 6), FRACTIONS, seed=0, donors=np.array(["a", "b"] * 3))


def test_too_small_type_raises_naming_type_counts():
    labels = np.array(["T"] * 30 + ["rare"] * 2 + ["B"] * 30)
    with pytest.raises(DeconflowError) as info:
        split_cells(labels, FRACTIONS, seed=0, source="ref.h5ad")
    message = str(info.value)
    assert "'rare': 2" in message
    assert "'T'" not in message and "'B'" not in message  # only the too-small type is named
    assert message.startswith("ref.h5ad: ")


def test_fractions_must_sum_to_one():
    with pytest.raises(DeconflowError, match="sum to 1"):
        split_cells(np.array(["T"] * 30), {"train": 0.5, "val": 0.2, "test": 0.2}, seed=0)


def test_read_split_returns_reference_order(tmp_path):
    reference_ids = np.array([f"c{i}" for i in range(8)])
    splits = np.array(["train", "val", "test", "train", "train", "val", "test", "train"])
    order = np.random.default_rng(3).permutation(8)  # file in another order, with an extra column
    table = pd.DataFrame({"cell_id": reference_ids[order], "cell_type": "T", "split": splits[order]})
    path = tmp_path / "cells.tsv"
    table.to_csv(path, sep="\t", index=False)
    np.testing.assert_array_equal(read_split(path, reference_ids), splits)
    # a subset / reordering of the reference is answered in that order
    np.testing.assert_array_equal(read_split(path, reference_ids[[5, 0]]), splits[[5, 0]])


def test_read_split_numeric_looking_cell_ids_stay_strings(tmp_path):
    path = tmp_path / "cells.tsv"
    pd.DataFrame({"cell_id": ["001", "002", "003"], "split": ["train", "val", "test"]}).to_csv(path, sep="\t", index=False)
    np.testing.assert_array_equal(read_split(path, ["003", "001"]), ["test", "train"])


def test_read_split_raises_for_unknown_cells(tmp_path):
    path = tmp_path / "cells.tsv"
    pd.DataFrame({"cell_id": ["c0", "c1"], "split": ["train", "val"]}).to_csv(path, sep="\t", index=False)
    with pytest.raises(DeconflowError) as info:
        read_split(path, ["c0", "c1", "c_new"])
    message = str(info.value)
    assert str(path) in message and "c_new" in message and "split_reference" in message
