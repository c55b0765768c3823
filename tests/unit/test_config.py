"""Config validation: one line naming the config file, the offending key and the fix."""

from pathlib import Path

import pytest
import yaml

from deconflow.config import add_cohorts, check_config
from deconflow.errors import DeconflowError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
VALID = {"datasets": {"pbmc": {"reference": "resources/pbmc/reference.h5ad"}}}
#: the real cohorts of config/cohorts.yaml (Monaco 2019, SDY67): read from ../shared, never shipped
REALBULK = ROOT.parent / "shared" / "realbulk"


def _write(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("name", ["config.yaml", "full.yaml", "test.yaml", "test_methylation.yaml"])
def test_shipped_configs_pass(name):
    check_config(yaml.safe_load((ROOT / "config" / name).read_text()), SCHEMA, [str(ROOT / "config" / name)])


@pytest.mark.parametrize(
    "change, key, problem, fix",
    [
        ({"models": ["nnls", "deepmagic"]}, "models[1]", "'deepmagic' is not one of", "use one of ['nnls', 'hpvade', 'scaden', 'sparse', 'nnls_reads']"),
        ({"split": {"train": 1.5}}, "split.train", "greater than or equal to the maximum of 1", "config/README.md"),
        ({"psuedobulk": {}}, "psuedobulk", "unknown key", "allowed keys here: ['cohorts_dir', 'cohorts_file', 'datasets', 'deconvolution'"),
        ({"seed": "seven"}, "seed", "'seven' is not of type 'integer'", "a value of type integer"),
        ({"datasets": {"pbmc": {"modality": "rna"}}}, "datasets.pbmc.reference", "'reference' is a required property", "add `datasets.pbmc.reference`"),
        ({"datasets": {"my data": {"reference": "x"}}}, "datasets", "name 'my data' not allowed", "names under `datasets` must match"),
    ],
)
def test_violation_names_file_key_and_fix(tmp_path, change, key, problem, fix):
    config_file = _write(tmp_path / "bad.yaml", {**VALID, **change})
    with pytest.raises(DeconflowError) as info:
        check_config(yaml.safe_load(Path(config_file).read_text()), SCHEMA, [config_file])
    error = info.value
    assert error.path == config_file
    assert error.problem.startswith(f"`{key}`: ") and problem in error.problem
    assert fix in error.fix
    assert str(error).startswith(f"{config_file}: `{key}`: ")


def test_names_the_file_that_set_the_key_or_the_command_line(tmp_path):
    base = _write(tmp_path / "base.yaml", VALID)
    override = _write(tmp_path / "override.yaml", {"split": {"val": 2}})
    merged = {**VALID, "split": {"val": 2}}
    with pytest.raises(DeconflowError) as info:
        check_config(merged, SCHEMA, [base, override])
    assert info.value.path == override
    with pytest.raises(DeconflowError) as info:
        check_config(merged, SCHEMA, [base, override], overrides={"split": {"val": 2}})
    assert info.value.path == "--config"
    seed, models = _write(tmp_path / "seed.yaml", {"seed": 1}), _write(tmp_path / "models.yaml", {"models": ["nnls"]})
    with pytest.raises(DeconflowError) as info:  # a missing key is in no file: all are named
        check_config({"seed": 1, "models": ["nnls"]}, SCHEMA, [seed, models])
    assert info.value.path == f"{seed} + {models}" and info.value.problem.startswith("`datasets`: ")


def test_does_not_change_the_config():
    config = {"datasets": {"pbmc": {"reference": "x"}}}
    check_config(config, SCHEMA)
    assert config == {"datasets": {"pbmc": {"reference": "x"}}}  # defaults are validate()'s job


# --------------------------------------------------------------------------- cohorts_dir
def _cohorts(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "cohorts"
    (folder / "one").mkdir(parents=True)
    (folder / "one" / "bulk.tsv").write_text("gene\tS1\nA\t1\n")
    (folder / "one" / "truth.tsv").write_text("sample\tT\nS1\t1\n")
    cohorts = {"pbmc": {"one": {"path": "one/bulk.tsv", "truth": "one/truth.tsv", "truth_groups": {"T": ["T cells"]},
                                "format": "table"}},
               "absent": {"two": {"path": "two/bulk.tsv"}}}
    return folder, _write(tmp_path / "cohorts.yaml", cohorts)


def test_cohorts_are_added_under_their_folder(tmp_path):
    folder, cohorts_file = _cohorts(tmp_path)
    config = {"datasets": {"pbmc": {"reference": "r.h5ad", "bulk": "own.tsv"}}, "cohorts_dir": str(folder),
              "cohorts_file": cohorts_file}
    merged = add_cohorts(config)
    bulks = merged["datasets"]["pbmc"]["bulk"]
    assert bulks == {"bulk": {"path": "own.tsv"},  # `bulk: PATH` keeps its name
                     "one": {"path": str(folder / "one" / "bulk.tsv"), "truth": str(folder / "one" / "truth.tsv"),
                             "truth_groups": {"T": ["T cells"]}, "format": "table"}}
    assert set(merged["datasets"]) == {"pbmc"}  # a dataset the config lacks is not made
    assert config["datasets"]["pbmc"]["bulk"] == "own.tsv"  # the config itself is not changed
    check_config(merged, SCHEMA)


def test_no_cohorts_dir_changes_nothing(tmp_path):
    assert add_cohorts(VALID) is VALID
    assert add_cohorts({**VALID, "cohorts_dir": None}, cohorts_file=str(tmp_path / "missing.yaml"))["datasets"] == VALID["datasets"]


def test_missing_cohorts_dir_is_one_line_with_the_fix(tmp_path):
    with pytest.raises(DeconflowError) as info:
        add_cohorts({**VALID, "cohorts_dir": str(tmp_path / "nowhere")})
    assert str(info.value).startswith(f"{tmp_path / 'nowhere'}: folder given as `cohorts_dir` does not exist. Fix: ")
    assert "--config cohorts_dir=../shared/realbulk" in info.value.fix


def test_cohort_file_missing_from_the_folder_or_clashing_name(tmp_path):
    folder, cohorts_file = _cohorts(tmp_path)
    (folder / "one" / "truth.tsv").unlink()
    with pytest.raises(DeconflowError) as info:
        add_cohorts(VALID, folder, cohorts_file)
    assert info.value.path == str(folder / "one" / "truth.tsv") and "`truth`" in info.value.problem
    clash = {"datasets": {"pbmc": {"reference": "r", "bulk": {"one": {"path": "x.tsv"}}}}}
    (folder / "one" / "truth.tsv").write_text("sample\tT\nS1\t1\n")
    with pytest.raises(DeconflowError, match="bulk 'one' is already a bulk of dataset 'pbmc'"):
        add_cohorts(clash, folder, cohorts_file)


@pytest.mark.skipif(not REALBULK.is_dir(), reason=f"real cohorts not here: {REALBULK} (Monaco 2019, SDY67) is absent")
def test_shipped_cohorts_file_reads_the_real_cohorts():
    """config/cohorts.yaml against ../shared/realbulk: every file exists, every truth group is a
    column of its truth table, every grouped type a reference cell type of the default config."""
    from deconflow.truth import read_truth

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    merged = add_cohorts(config, REALBULK, ROOT / "config" / "cohorts.yaml")
    check_config(merged, SCHEMA)
    bulks = merged["datasets"]["pbmc"]["bulk"]
    assert {"monaco", "sdy67"} <= set(bulks)
    daism_types = {t for types in bulks["daism"]["truth_groups"].values() for t in types}
    for name in ("monaco", "sdy67"):
        truth = read_truth(bulks[name]["truth"])
        assert len(truth) == 12
        assert set(bulks[name]["truth_groups"]) == set(truth.columns) - {"Unknown"}
        assert {t for types in bulks[name]["truth_groups"].values() for t in types} == daism_types


def test_nested_command_line_values_are_typed_as_a_config_file_types_them():
    """`--config train={"hpvade": {"lambda_bulk": 6.0}}` reaches the config as text (Snakemake's
    BaseLoader); it is read again like a config file, and YAML 1.1 text stays text to be named."""
    from deconflow.config import check_config_text, typed_overrides

    overrides = {"train": {"hpvade": {"lambda_bulk": "6.0", "epochs": "3"}, "learning_rate": "5e-1"}}
    config = {"train": {"epochs": 20, "hpvade": {"lambda_bulk": "6.0", "epochs": "3"}, "learning_rate": "5e-1"}}
    typed_overrides(config, overrides)
    assert config["train"]["hpvade"] == {"lambda_bulk": 6.0, "epochs": 3}
    assert config["train"]["learning_rate"] == "5e-1"
    with pytest.raises(DeconflowError, match="learning_rate"):
        check_config_text(config, [], overrides)
    del config["train"]["learning_rate"]
    check_config_text(config, [], overrides)
