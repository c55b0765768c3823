"""A bulk's mRNA content per cell (``cell_mrna``): reading the table and converting any model's
reference-calibrated cell fractions to the bulk's protocol."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from deconflow.cell_content import read_cell_mrna, reference_cell_size, to_bulk_cell_fractions
from deconflow.deconvolve import deconvolve_file
from deconflow.errors import DeconflowError
from deconflow.io import MixtureSet
from deconflow.models import save_checkpoint
from deconflow.models.nnls import fit
from deconflow.signature import cell_type_mean_cpm

TYPES = ["B", "T", "Mono"]
REFERENCE_UMIS = [2000.0, 1800.0, 3500.0]  # the reference's mean library size per type
BULK_MRNA = [0.40, 0.40, 1.42]  # the bulk's mRNA per cell (another protocol)


def _write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def signature():
    rng = np.random.default_rng(11)
    profiles = rng.dirichlet(np.full(80, 0.4), size=len(TYPES))
    counts = np.vstack([np.round(profiles[k] * 5000) for k in range(len(TYPES)) for _ in range(5)])
    labels = np.repeat(TYPES, 5)
    genes = [f"g{i}" for i in range(80)]
    S = cell_type_mean_cpm(sp.csr_matrix(counts), labels, genes, TYPES)
    S.attrs["cell_library_size"] = pd.Series(REFERENCE_UMIS, index=TYPES)
    return S


def _as_mixtures(bulk, truth):
    return MixtureSet(bulk.to_numpy().T, truth, bulk.index.to_numpy(), np.array(TYPES), bulk.columns.to_numpy(), {"normalization": "cpm"})


def _bulk_of_cells(signature, cell_fractions, mrna_per_cell):
    """Noise-free CPM bulk (genes x samples) of cells holding ``mrna_per_cell`` mRNA each."""
    shares = cell_fractions * np.asarray(mrna_per_cell)[None, :]
    shares /= shares.sum(axis=1, keepdims=True)
    bulk = shares @ signature.to_numpy().T
    return pd.DataFrame(bulk.T, index=signature.index, columns=[f"s{i}" for i in range(len(cell_fractions))])


def test_conversion_recovers_the_cell_fractions_of_a_bulk_with_other_mrna_per_cell_exactly(signature):
    truth = np.array([[0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.6, 0.1, 0.3]])
    bulk = _bulk_of_cells(signature, truth, BULK_MRNA)
    model = fit(_as_mixtures(bulk, truth), None, signature, {"linear_fit": {"marker_genes_per_type": None, "weight_offset_cpm": None, "cell_fractions": True}})
    calibrated = model.predict(bulk.to_numpy().T)  # cell fractions as if cells held the reference's UMIs
    assert np.abs(calibrated - truth).max() > 0.05  # the protocol difference matters here
    converted = to_bulk_cell_fractions(calibrated, REFERENCE_UMIS, BULK_MRNA)
    np.testing.assert_allclose(converted, truth, atol=1e-6)
    # equal contents in both protocols (up to a common factor) change nothing
    np.testing.assert_allclose(to_bulk_cell_fractions(calibrated, REFERENCE_UMIS, np.array(REFERENCE_UMIS) * 3), calibrated, atol=1e-12)


def test_read_cell_mrna_fills_unlisted_types_from_the_default_row(tmp_path):
    table = _write(tmp_path / "m.tsv", "# comment\ncell_type\tmrna_per_cell\nMono\t1.42\ndefault\t0.4\n")
    np.testing.assert_allclose(read_cell_mrna(table, TYPES), [0.4, 0.4, 1.42])


def test_types_the_table_does_not_list_keep_the_reference_size_in_the_tables_units(tmp_path):
    """Only T and Mono measured: B keeps its reference size scaled by the geometric-mean factor of
    the measured types, so a bulk whose B cells hold exactly that mRNA is recovered exactly."""
    content = np.array([np.nan, 0.40, 1.42])
    factor = np.exp(np.mean(np.log(np.array(REFERENCE_UMIS)[1:] / content[1:])))
    implied = content.copy()
    implied[0] = REFERENCE_UMIS[0] / factor
    p = np.array([[0.3, 0.3, 0.4]])
    np.testing.assert_allclose(to_bulk_cell_fractions(p, REFERENCE_UMIS, content), to_bulk_cell_fractions(p, REFERENCE_UMIS, implied))
    assert np.isnan(read_cell_mrna(_write(tmp_path / "m.tsv", "cell_type\tmrna_per_cell\nT\t0.4\n"), TYPES)[0])


@pytest.mark.parametrize("text, problem", [
    ("cell_type\tmrna_per_cell\ndefault\t0.4\nMonocytes\t1.42\n", "are not cell types of the model"),
    ("cell_type\tmrna_per_cell\nMonocytes\t1.42\ndefault\t0.4\n", "are not cell types of the model"),
    ("cell_type\tmrna_per_cell\nMono\t0\ndefault\t0.4\n", "not a positive number"),
    ("cell_type\tmrna_per_cell\nMono\tlots\ndefault\t0.4\n", "not a positive number"),
    ("cell_type\tmrna_per_cell\nMono\t1\nMono\t2\ndefault\t0.4\n", "listed twice"),
    ("cell_type\tmrna_per_cell\textra\nMono\t1\t2\n", "expected 2 columns"),
])
def test_read_cell_mrna_refuses_bad_tables_naming_the_file(tmp_path, text, problem):
    table = _write(tmp_path / "bad.tsv", text)
    with pytest.raises(DeconflowError) as error:
        read_cell_mrna(table, TYPES)
    assert problem in str(error.value) and "bad.tsv" in str(error.value)


def test_deconvolve_file_applies_the_table_and_needs_the_reference_sizes(signature, tmp_path):
    truth = np.array([[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    bulk = _bulk_of_cells(signature, truth, BULK_MRNA)
    bulk_path = tmp_path / "bulk.tsv"
    bulk.rename_axis("gene").to_csv(bulk_path, sep="\t")
    table = _write(tmp_path / "content.tsv", "cell_type\tmrna_per_cell\nMono\t1.42\ndefault\t0.40\n")
    model = fit(_as_mixtures(bulk, truth), None, signature, {"linear_fit": {"marker_genes_per_type": None, "weight_offset_cpm": None}})
    with_sizes, without = tmp_path / "with.pt", tmp_path / "without.pt"
    save_checkpoint(model.checkpoint({"reference_cell_size": reference_cell_size(signature)}), with_sizes)
    save_checkpoint(model.checkpoint({}), without)
    out = deconvolve_file(with_sizes, bulk_path, tmp_path / "p.csv", min_overlap=10, cell_mrna=table)
    np.testing.assert_allclose(out.to_numpy(), truth, atol=1e-6)
    with pytest.raises(DeconflowError, match="retrain the model"):
        deconvolve_file(without, bulk_path, tmp_path / "q.csv", min_overlap=10, cell_mrna=table)
    assert not (tmp_path / "q.csv").exists()  # no partial output
