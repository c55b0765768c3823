import numpy as np
import pytest
import scipy.sparse as sp

from deconflow.io import Reference


@pytest.fixture
def marker_reference():
    """A reference where each cell type expresses only its own marker gene (10 counts per cell)
    plus shared background genes, so mixture CPM of marker k is exactly proportional to the
    number of type-k cells drawn."""
    rng = np.random.default_rng(0)
    n_types, cells_per_type, n_background = 4, 25, 6
    labels = np.repeat([f"type{k}" for k in range(n_types)], cells_per_type)
    n_cells = len(labels)
    markers = np.zeros((n_cells, n_types))
    for k in range(n_types):
        markers[labels == f"type{k}", k] = 10
    background = rng.poisson(0.0, size=(n_cells, n_background))  # zeros: keeps the identity exact
    counts = sp.csr_matrix(np.hstack([markers, background]).astype(np.float32))
    genes = np.array([f"marker{k}" for k in range(n_types)] + [f"bg{j}" for j in range(n_background)])
    return Reference(counts=counts, cell_ids=np.array([f"c{i}" for i in range(n_cells)]), genes=genes, labels=labels, path="mem")
