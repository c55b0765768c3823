"""Real bulk with measured fractions: the `bulk` config shapes, reading and checking the truth
file, the group mapping and the renormalised metrics (worked out by hand), the daism converter."""

from __future__ import annotations

import io
import math
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deconflow.config import check_config
from deconflow.io.data import DAISM_MEMBERS, convert_daism_sdist
from deconflow.errors import DeconflowError
from deconflow.truth import SINGLE_BULK_NAME, check_truth, evaluate_bulk_file, named_bulks, read_truth, score_against_truth

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
KEY = "datasets.pbmc.bulk.measured"
GROUPS = {"g1": ["A", "B"], "g2": ["C"]}  # cell type D is mapped to no group


# --------------------------------------------------------------------------- config shapes
def test_a_plain_path_is_one_bulk_without_truth_and_none_is_no_bulk():
    assert named_bulks(None) == {}
    assert named_bulks("data/bulk.tsv") == {SINGLE_BULK_NAME: {"path": "data/bulk.tsv", "truth": None, "truth_groups": {}}}


def test_named_bulks_keep_their_truth_and_groups():
    setting = {"plain": {"path": "a.tsv"}, "measured": {"path": "b.tsv", "truth": "t.tsv", "truth_groups": GROUPS}}
    bulks = named_bulks(setting)
    assert list(bulks) == ["plain", "measured"]
    assert bulks["plain"] == {"path": "a.tsv", "truth": None, "truth_groups": {}}
    assert bulks["measured"] == {"path": "b.tsv", "truth": "t.tsv", "truth_groups": GROUPS}


def _check(tmp_path, bulk):
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump({"datasets": {"pbmc": {"reference": "r.h5ad", "bulk": bulk}}}))
    check_config(yaml.safe_load(config_file.read_text()), SCHEMA, [str(config_file)])


def test_schema_accepts_both_shapes_and_refuses_truth_without_groups(tmp_path):
    _check(tmp_path, "bulk.tsv")
    _check(tmp_path, {"measured": {"path": "b.tsv", "truth": "t.tsv", "truth_groups": GROUPS}})
    with pytest.raises(DeconflowError, match=r"`datasets.pbmc.bulk.measured`: 'truth_groups' is a dependency of 'truth'"):
        _check(tmp_path, {"measured": {"path": "b.tsv", "truth": "t.tsv"}})
    with pytest.raises(DeconflowError, match=r"`datasets.pbmc.bulk.measured.path`: 'path' is a required property"):
        _check(tmp_path, {"measured": {"truth": "t.tsv", "truth_groups": GROUPS}})
    with pytest.raises(DeconflowError, match=r"`datasets.pbmc.bulk.measured.truth_groups.g1`: \[\] should be non-empty"):
        _check(tmp_path, {"measured": {"path": "b.tsv", "truth": "t.tsv", "truth_groups": {"g1": []}}})


# --------------------------------------------------------------------------- reading the truth file
def _write_truth(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD_TRUTH = "sample_id\tg1\tg2\tother\ns1\t0.3\t0.5\t0.2\ns2\t0.2\t0.6\t0.1\n"


def test_read_truth_keeps_samples_and_groups(tmp_path):
    truth = read_truth(_write_truth(tmp_path / "t.tsv", GOOD_TRUTH), key=f"{KEY}.truth")
    assert truth.index.tolist() == ["s1", "s2"] and truth.columns.tolist() == ["g1", "g2", "other"]
    assert truth.loc["s2", "g2"] == 0.6


@pytest.mark.parametrize(
    "text, problem, fix",
    [
        ("", "is empty", "one row per sample"),
        ("sample_id\tg1\tg2\n", "no sample rows", "one row per sample"),
        ("sample_id\tg1\tg2\ns1\t0.3\tNaN\n", "1 NaN/inf fractions (samples ['s1'])", "drop the samples"),
        ("sample_id\tg1\tg2\ns1\t30\t50\n", "outside [0, 1] (min 30, max 50)", "divide percentages by 100"),
        ("sample_id\tg1\tg2\ns1\t-0.1\t0.5\n", "outside [0, 1]", "between 0 and 1"),
        ("sample_id\tg1\tg2\ns1\t0.3\t0.5\ns1\t0.2\t0.6\n", "duplicate sample ids: ['s1']", "one row"),
        ("sample_id\tg1\tg2\ns1\t0.3\thigh\n", "non-numeric group columns ['g2']", "fractions in the others"),
    ],
)
def test_bad_truth_file_names_file_key_and_fix(tmp_path, text, problem, fix):
    path = _write_truth(tmp_path / "t.tsv", text)
    with pytest.raises(DeconflowError) as info:
        read_truth(path, key=f"{KEY}.truth")
    error = info.value
    assert error.path == str(path)
    assert f"`{KEY}.truth`" in error.problem and problem in error.problem, error.problem
    assert fix in error.fix


def test_missing_truth_file_names_the_key(tmp_path):
    with pytest.raises(DeconflowError, match=rf"does not exist. Fix: check `{KEY}.truth`"):
        read_truth(tmp_path / "absent.tsv", key=f"{KEY}.truth")


# --------------------------------------------------------------------------- checking the mapping
TRUTH = pd.DataFrame({"g1": [0.3, 0.2], "g2": [0.5, 0.6], "other": [0.2, 0.1]}, index=["s1", "s2"])
BULK_SAMPLES = ["s1", "s2", "s3"]
CELL_TYPES = ["A", "B", "C", "D"]


def test_good_mapping_passes():
    check_truth(TRUTH, GROUPS, BULK_SAMPLES, CELL_TYPES, "t.tsv", "b.tsv", KEY)


@pytest.mark.parametrize(
    "truth, groups, problem, fix",
    [
        (TRUTH.rename(index={"s2": "s9"}), GROUPS, f"`{KEY}.truth`: samples ['s9'] are not in the bulk file b.tsv",
         "use the bulk file's sample ids"),
        (TRUTH, {**GROUPS, "g3": ["D"]}, f"`{KEY}.truth_groups`: groups ['g3'] are not columns of the truth file",
         "after a column of the truth file"),
        (TRUTH, {"g1": ["A", "Z"], "g2": ["C"]}, f"`{KEY}.truth_groups`: cell types ['Z'] are not cell types of the model",
         "list only reference cell types"),
        (TRUTH, {"g1": ["A", "C"], "g2": ["C"]}, f"`{KEY}.truth_groups`: cell type 'C' is in two groups ('g1' and 'g2')",
         "one group at most"),
        (TRUTH, {}, f"`{KEY}.truth_groups` is empty", "map each truth group"),
    ],
)
def test_bad_mapping_names_file_key_and_fix(truth, groups, problem, fix):
    with pytest.raises(DeconflowError) as info:
        check_truth(truth, groups, BULK_SAMPLES, CELL_TYPES, "t.tsv", "b.tsv", KEY)
    assert info.value.path == "t.tsv"
    assert problem in info.value.problem, info.value.problem
    assert fix in info.value.fix


# --------------------------------------------------------------------------- renormalised metrics by hand
# predicted (s3 has no truth and is left out):   group sums      renormalised over g1, g2
#   s1: A .2  B .2  C .4  D .2                  g1 .4  g2 .4    .5       .5
#   s2: A .1  B 0   C .6  D .3                  g1 .1  g2 .6    1/7      6/7
# truth (the column `other` is mapped to no group):
#   s1: g1 .3  g2 .5                                            .375     .625
#   s2: g1 .2  g2 .6                                            .25      .75
PROPORTIONS = pd.DataFrame(
    [[0.2, 0.2, 0.4, 0.2], [0.1, 0.0, 0.6, 0.3], [0.25, 0.25, 0.25, 0.25]], index=["s1", "s2", "s3"], columns=CELL_TYPES
)


def test_renormalised_metrics_by_hand():
    summary, metrics = score_against_truth(PROPORTIONS, TRUTH, GROUPS)
    assert summary.columns.tolist() == ["sample_id", "cell_type", "true_proportion", "predicted_proportion"]
    assert summary["sample_id"].tolist() == ["s1", "s1", "s2", "s2"]
    assert summary["cell_type"].tolist() == ["g1", "g2", "g1", "g2"]
    np.testing.assert_allclose(summary["true_proportion"], [0.375, 0.625, 0.25, 0.75])
    np.testing.assert_allclose(summary["predicted_proportion"], [0.5, 0.5, 1 / 7, 6 / 7])
    # renormalised errors: s1 ±.125, s2 ∓(.25 − 1/7) = ∓3/28
    assert metrics["mae"] == pytest.approx((0.125 + 3 / 28) / 2)
    assert metrics["rmse"] == pytest.approx(math.sqrt((0.125**2 + (3 / 28) ** 2) / 2))
    # raw group sums vs raw truth: |.4−.3|, |.4−.5|, |.1−.2|, |.6−.6|
    assert metrics["mae_unrenormalised"] == pytest.approx(0.3 / 4)
    # two samples per group, both moving the same way: r = 1 for g1 and g2
    assert metrics["per_cell_type_r"] == pytest.approx({"g1": 1.0, "g2": 1.0})
    # CCC over the 4 entries: both means .5; cov 5/112, var(true) 5/128, var(pred) 25/392
    assert metrics["ccc"] == pytest.approx(2 * (5 / 112) / (5 / 128 + 25 / 392))
    assert metrics["n_samples"] == 2 and metrics["n_cell_types"] == 2
    assert metrics["mean_predicted_in_groups"] == pytest.approx((0.8 + 0.7) / 2)
    assert metrics["mean_measured_in_groups"] == pytest.approx(0.8)
    assert metrics["unmapped_cell_types"] == ["D"]


def test_evaluate_bulk_file_reads_checks_and_scores(tmp_path):
    proportions = tmp_path / "proportions.csv"
    PROPORTIONS.rename_axis("sample_id").to_csv(proportions)
    truth = _write_truth(tmp_path / "t.tsv", GOOD_TRUTH)
    summary, metrics = evaluate_bulk_file(proportions, truth, GROUPS, "b.tsv", KEY)
    assert metrics["mae_unrenormalised"] == pytest.approx(0.075)
    assert len(summary) == 4
    with pytest.raises(DeconflowError, match=r"cell types \['Monocytes'\] are not cell types of the model"):
        evaluate_bulk_file(proportions, truth, {"g1": ["Monocytes"]}, "b.tsv", KEY)


# --------------------------------------------------------------------------- the daism converter
def _sdist(path: Path, members: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


# as in the sdist: the header names only the samples; fractions are groups x samples
EXPRESSION = "S1\tS2\tS3\nG1\t10\t0\t5.5\nG2\t3\t7\t0.25\n"
FRACTIONS = "S1\tS2\tS3\nmono\t0.2\t0.3\t0.1\nB\t0.05\t0.04\t0.06\n"


def test_daism_converter_reads_the_calibration_members_and_transposes_the_fractions(tmp_path):
    sdist = _sdist(tmp_path / "daism.tar.gz", {DAISM_MEMBERS["bulk"]: EXPRESSION, DAISM_MEMBERS["truth"]: FRACTIONS})
    summary = convert_daism_sdist(sdist, tmp_path / "bulk.tsv", tmp_path / "truth.tsv")
    assert summary["n_bulk_genes"] == 2 and summary["n_bulk_samples"] == 3 and summary["truth_groups"] == ["mono", "B"]
    bulk = pd.read_csv(tmp_path / "bulk.tsv", sep="\t", index_col=0)
    assert bulk.index.name == "gene" and bulk.columns.tolist() == ["S1", "S2", "S3"]
    assert bulk.loc["G1", "S3"] == 5.5 and bulk.loc["G2", "S2"] == 7
    truth = read_truth(tmp_path / "truth.tsv")
    assert truth.index.tolist() == ["S1", "S2", "S3"] and truth.columns.tolist() == ["mono", "B"]
    assert truth.loc["S2", "mono"] == 0.3 and truth.loc["S3", "B"] == 0.06


def test_daism_converter_refuses_an_archive_without_the_calibration_members(tmp_path):
    sdist = _sdist(tmp_path / "daism.tar.gz", {DAISM_MEMBERS["bulk"]: EXPRESSION})
    with pytest.raises(DeconflowError, match=r"califra.txt is missing from the archive. Fix: .*fetch_daism_sdist"):
        convert_daism_sdist(sdist, tmp_path / "bulk.tsv", tmp_path / "truth.tsv")
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DeconflowError, match="not a readable source distribution"):
        convert_daism_sdist(tmp_path / "broken.tar.gz", tmp_path / "bulk.tsv", tmp_path / "truth.tsv")
