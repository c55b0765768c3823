"""Reading and writing every file the pipeline touches: one home for the readers.

Rules of this package:
- outputs are written atomically (temporary file in the same folder, then ``os.replace``),
  so a failed or interrupted job never leaves a half-written file that looks finished;
- inputs are only read, never modified;
- mixture files (HDF5) carry their provenance as attributes, and readers refuse files made
  under another normalisation with a message naming the rule to rerun.

Layers: a module imports only the modules above it in this list (and ``deconflow.errors``,
``deconflow.__version__``), never the rest of deconflow; ``tests/unit/test_io_layers.py`` checks it.

1. ``tables``: the one reader of delimited text tables (separator, header, quotes from the content);
2. ``files``: atomic writers (``write_table``, ``write_json``), checksums, the id/value checks;
3. ``genes``: Ensembl IDs and symbols, matching a bulk file's genes to a model's;
4. ``references``: single-cell references (h5ad, Cell Ranger ``.h5``, 10x folders);
5. ``mixtures``: mixture files (HDF5), signatures, per-type library sizes;
6. ``bulks``: bulk RNA files (tables, h5ad, quantifier outputs);
7. ``methylation_calls``: per-CpG methylation calls (Bismark, MethylDackel);
8. ``data``: the embedded default data, converted from PyPI wheels.

This module re-exports the names other modules and users import (``from deconflow.io import
read_bulk, write_table, MixtureSet, ...``).
"""

from .tables import MISSING, non_numeric_columns, read_numeric_table, read_table, to_numbers
from .files import (
    SPREADSHEET_DATE,
    atomic_path,
    check_feature_ids,
    file_checksum,
    spreadsheet_dates,
    write_json,
    write_table,
)
from .genes import GeneMatch, match_bulk_genes, read_gene_table, strip_version
from .references import (
    Reference,
    ReferenceSource,
    open_reference,
    read_reference,
    reference_gene_aliases,
    write_reference_h5ad,
)
from .mixtures import (
    LIBRARY_SIZE_FILE,
    MIXTURE_FORMAT_VERSION,
    PRODUCER_RULE,
    MixtureSet,
    read_library_size,
    read_mixtures,
    read_signature,
    write_mixtures,
)
from .bulks import BULK_FIX, detect_format, expand_bulk_paths, file_stem, read_bulk, read_bulk_table, read_rna_bulk
from .methylation_calls import MethylationCalls, read_methylation_calls, read_methylation_samples
from .data import convert_daism_sdist, convert_gene_table_wheel, convert_rectangle_wheel

__all__ = [
    "BULK_FIX",
    "LIBRARY_SIZE_FILE",
    "MISSING",
    "MIXTURE_FORMAT_VERSION",
    "PRODUCER_RULE",
    "SPREADSHEET_DATE",
    "GeneMatch",
    "MethylationCalls",
    "MixtureSet",
    "Reference",
    "ReferenceSource",
    "atomic_path",
    "check_feature_ids",
    "convert_daism_sdist",
    "convert_gene_table_wheel",
    "convert_rectangle_wheel",
    "detect_format",
    "expand_bulk_paths",
    "file_checksum",
    "file_stem",
    "match_bulk_genes",
    "non_numeric_columns",
    "open_reference",
    "read_bulk",
    "read_bulk_table",
    "read_gene_table",
    "read_library_size",
    "read_methylation_calls",
    "read_methylation_samples",
    "read_mixtures",
    "read_numeric_table",
    "read_reference",
    "read_rna_bulk",
    "read_signature",
    "read_table",
    "reference_gene_aliases",
    "spreadsheet_dates",
    "strip_version",
    "to_numbers",
    "write_json",
    "write_mixtures",
    "write_reference_h5ad",
    "write_table",
]
