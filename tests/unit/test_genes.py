"""Gene identifiers (deconflow.io.genes) and bulk format detection (deconflow.io.bulks) on small
tables written here."""

import numpy as np
import pandas as pd
import pytest

from deconflow.errors import DeconflowError
from deconflow.io.bulks import detect_format, read_rna_bulk, sample_name_from_bam
from deconflow.io.genes import ENSEMBL, SYMBOL, canonical_genes, identifier_kind, match_bulk_genes, read_gene_table, strip_version

TABLE = pd.DataFrame({
    "ensembl_id": ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003", "ENSG00000000004", "ENSG00000000005"],
    "symbol": ["CD3E", "CD19", "MS4A1", "MS4A1", "NKG7"],  # MS4A1 has two IDs
})


def test_strip_version_and_kinds():
    assert strip_version("ENSG00000141510.16") == "ENSG00000141510"
    assert strip_version("ENSG00000182378.13_PAR_Y") == "ENSG00000182378"
    assert strip_version("ENSGR0000182378.13") == "ENSG00000182378"  # GENCODE v22's chrY PAR copy
    assert strip_version("ENSMUSG00000000001.4") == "ENSMUSG00000000001"
    assert strip_version("HLA-A.1") == "HLA-A.1"  # a symbol keeps its dot
    assert identifier_kind(["ENSG00000141510.16", "ENSG00000000003", "TP53"]) == ENSEMBL
    assert identifier_kind(["TP53", "CD3E", "ENSG00000000003"]) == SYMBOL


def test_ensembl_bulk_matches_symbol_model_through_the_table_and_sums_ids_of_one_symbol():
    bulk = pd.DataFrame(
        {"s1": [10.0, 20.0, 5.0, 7.0, 99.0], "s2": [1.0, 2.0, 3.0, 4.0, 5.0]},
        index=["ENSG00000000001.3", "ENSG00000000002.1", "ENSG00000000003.9", "ENSG00000000004.2", "ENSG00000099999.1"],
    )
    matched, match = match_bulk_genes(bulk, ["CD3E", "CD19", "MS4A1", "NKG7"], gene_table=TABLE)
    assert matched.loc["MS4A1"].tolist() == [12.0, 7.0]  # two Ensembl IDs of one symbol summed
    assert matched.loc["CD3E"].tolist() == [10.0, 1.0]
    assert "NKG7" not in matched.index and len(matched) == 3
    assert match.n_matched == 3 and match.n_rows_unmatched == 1
    assert match.n_features_summed == 1 and match.n_rows_summed == 2
    assert match.bulk_kind == "Ensembl IDs (with version suffixes)"


def test_symbol_bulk_matches_ensembl_model_and_ambiguous_symbols_are_not_used():
    model = ["ENSG00000000001", "ENSG00000000003", "ENSG00000000004"]
    bulk = pd.DataFrame({"s1": [1.0, 2.0]}, index=["CD3E", "MS4A1"])
    matched, match = match_bulk_genes(bulk, model, gene_table=TABLE)
    assert matched.index.tolist() == ["ENSG00000000001"]  # MS4A1 -> two model genes: ambiguous
    assert match.matched_by == {"by Ensembl ID": 0, f"by symbol via the gene table {TABLE.attrs.get('path', 'gene table')}": 1}


def test_reference_aliases_win_over_the_table():
    aliases = pd.DataFrame({"feature": ["CD3E"], "ensembl_id": ["ENSG00000000777"]})
    bulk = pd.DataFrame({"s1": [4.0]}, index=["ENSG00000000777.2"])
    matched, match = match_bulk_genes(bulk, ["CD3E", "CD19"], aliases=aliases, gene_table=TABLE)
    assert matched.loc["CD3E", "s1"] == 4.0
    assert match.matched_by["by Ensembl ID (the reference's own IDs)"] == 1


def test_canonical_genes_prefers_symbols_and_keeps_genes_without_one():
    features, aliases = canonical_genes(["ENSG00000000001.1", "ENSG00000000002.1"], pd.Series(["CD3E", np.nan]), "feature_name")
    assert features.tolist() == ["CD3E", "ENSG00000000002"]
    assert aliases["ensembl_id"].tolist() == ["ENSG00000000001", "ENSG00000000002"]


def test_gene_table_without_symbol_column_is_refused(tmp_path):
    path = tmp_path / "genes.tsv"
    pd.DataFrame({"gene_id": ["ENSG00000000001"], "name": ["CD3E"]}).to_csv(path, sep="\t", index=False)
    with pytest.raises(DeconflowError, match=r"gene table has no column \['ensembl_id', 'symbol'\].*Fix: give `gene_table`"):
        read_gene_table(path)


# --------------------------------------------------------------------------- bulk formats
def test_featurecounts_without_comment_line_is_detected_and_named_by_bam(tmp_path):
    path = tmp_path / "counts.txt"
    path.write_text("Geneid\tChr\tStart\tEnd\tStrand\tLength\t/x/A.bam\tB.bam\nENSG00000000001.1\tchr1\t1\t9\t+\t9\t5\t6\n")
    assert detect_format(path) == "featurecounts"
    table, fmt = read_rna_bulk(path)
    assert fmt == "featurecounts" and table.columns.tolist() == ["A", "B"]
    assert sample_name_from_bam("/data/S1.sorted.bam") == "S1.sorted"
    with pytest.raises(DeconflowError, match="featureCounts gives read counts, not TPM"):
        read_rna_bulk(path, quantity="tpm")


def test_salmon_transcripts_need_gene_names_or_tx2gene(tmp_path):
    quant = tmp_path / "S1" / "quant.sf"
    quant.parent.mkdir()
    quant.write_text("Name\tLength\tEffectiveLength\tTPM\tNumReads\n"
                     "ENST00000000001.1\t1000\t850\t10\t5\nENST00000000002.1\t1000\t850\t30\t15\n")
    with pytest.raises(DeconflowError, match="holds transcripts .* Fix: give salmon's quant.genes.sf .* `tx2gene`"):
        read_rna_bulk(quant)
    tx2gene = tmp_path / "tx2gene.tsv"
    tx2gene.write_text("ENST00000000001\tENSG00000000009\nENST00000000002\tENSG00000000009\n")
    table, _ = read_rna_bulk(quant, tx2gene=tx2gene)
    assert table.to_dict() == {"S1": {"ENSG00000000009": 20.0}}
    table, _ = read_rna_bulk(quant, tx2gene=tx2gene, quantity="tpm")
    assert table.to_dict() == {"S1": {"ENSG00000000009": 40.0}}


def test_plain_table_is_still_a_table(tmp_path):
    path = tmp_path / "bulk.tsv"
    path.write_text("gene\ts1\ts2\nCD3E\t1\t2\n")
    assert detect_format(path) == "table"
    assert read_rna_bulk(path)[0].shape == (1, 2)


def test_another_species_ensembl_ids_are_named_in_the_fix(tmp_path):
    """Mouse Ensembl IDs against a human-symbol model: the refusal says the species differ,
    instead of asking for an Ensembl column the reference would not help with."""
    from deconflow.deconvolve import read_rna_bulk_for_model
    from deconflow.io.genes import ensembl_species
    from deconflow.models.nnls import NNLSModel

    assert ensembl_species(["ENSMUSG00000000001.4", "ENSMUSG00000000028", "ACTB"]) == "mouse (ENSMUSG...)"
    assert ensembl_species(["ENSG00000075624", "ENSG00000111640"]) is None
    signature = pd.DataFrame(np.eye(3) * 100 + 1, index=["CD3E", "MS4A1", "LYZ"], columns=["T", "B", "Mono"])
    model = NNLSModel(signature)
    bulk = tmp_path / "mouse.tsv"
    bulk.write_text("gene\ts1\nENSMUSG00000000001.4\t10\nENSMUSG00000000028.15\t5\nENSMUSG00000000031.17\t7\n")
    with pytest.raises(DeconflowError, match=r"mouse \(ENSMUSG\.\.\.\) genes, the reference's are not: deconvolve it with a reference of the same species"):
        read_rna_bulk_for_model(bulk, model, 2)
