"""Config validation with messages that name the config file, the key and the fix.

snakemake's ``validate()`` reports a schema violation as a jsonschema dump that names neither the
config file nor what to change. When ``validate()`` fails, the Snakefile calls ``check_config``
on the same schema, which raises one ``DeconflowError`` line instead (a valid config is checked
only once, by ``validate()``, which also fills in the defaults).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import yaml

from .errors import DeconflowError

README = "config/README.md"


def _key_name(path: Iterable) -> str:
    """['datasets', 'x', 'models', 0] -> 'datasets.x.models[0]'."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name


def _holds(data, path: list) -> bool:
    for part in path:
        if isinstance(part, int) and isinstance(data, list) and part < len(data):
            data = data[part]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return False
    return True


def _shown(config_file) -> str:
    """A config file as the user typed it: relative to the working directory when inside it."""
    path = Path(config_file)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _source(path: list, config_files: list, overrides: dict | None) -> str:
    """Where the offending key was given: ``--config``, else the last config file holding it."""
    if overrides and _holds(dict(overrides), path):
        return "--config"
    for config_file in reversed(config_files):
        try:
            if _holds(yaml.safe_load(Path(config_file).read_text()) or {}, path):
                return _shown(config_file)
        except (OSError, yaml.YAMLError):
            continue
    return " + ".join(_shown(f) for f in config_files) or "--config"


def check_config(config: dict, schema_path: str | Path, config_files: Iterable[str] = (), overrides: dict | None = None) -> None:
    """Raise ``DeconflowError(config file, "`key`: problem", fix)`` for the first schema violation.

    ``config_files`` are the files the config was read from (the last wins), ``overrides`` the
    ``--config`` values; they only serve to name where the offending key was set.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    path = list(error.absolute_path)
    problem = error.message
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in allowed]
        path.append(unknown[0])
        problem = f"unknown key, not allowed here ({error.message})"
        fix = f"remove it or correct its spelling; allowed keys here: {allowed} (see {README})"
    elif error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        path.append(missing)
        fix = f"add `{_key_name(path)}` (see {README})"
    elif "propertyNames" in error.absolute_schema_path:  # a name under e.g. `datasets`
        problem = f"name {error.instance!r} not allowed ({error.message})"
        fix = f"rename it; names under `{_key_name(path)}` must match {error.validator_value!r} (see {README})"
    elif error.validator == "enum":
        fix = f"use one of {error.validator_value}"
    elif error.validator == "type":
        fix = f"give `{_key_name(path)}` a value of type {error.validator_value} (see {README})"
    else:
        fix = f"change `{_key_name(path)}` to a value allowed by {_shown(schema_path)} (see {README})"
    raise DeconflowError(_source(path, list(config_files), overrides), f"`{_key_name(path) or '(top level)'}`: {problem}", fix)


#: The cohorts file read when ``cohorts_dir`` is set and ``cohorts_file`` is not.
COHORTS_FILE = "config/cohorts.yaml"


def add_cohorts(config: dict, cohorts_dir=None, cohorts_file=None) -> dict:
    """``config`` with the named bulks of a cohorts file added to its datasets (a new dict).

    The cohorts file (YAML, default ``config/cohorts.yaml``) maps dataset names to named bulks
    whose ``path``, ``truth`` and ``cell_mrna`` are relative to ``cohorts_dir`` (e.g. the folder
    ``../shared/realbulk`` holding ``monaco2019/`` and ``sdy67/``); every other key of a bulk
    (``truth_groups``, ``format``, ...) is taken as it is. Datasets of the file that the config
    does not have are skipped. ``cohorts_dir`` / ``cohorts_file`` None: the config's own
    ``cohorts_dir`` / ``cohorts_file`` keys; no ``cohorts_dir`` anywhere returns ``config``
    unchanged. A dataset's single-path ``bulk`` becomes ``{bulk: {path: ...}}`` first.

    Raises DeconflowError (one line: the folder or file, the cause, the fix) when the folder,
    the cohorts file or a file it names does not exist, or a cohort's name is already a bulk of
    the dataset.
    """
    cohorts_dir = cohorts_dir if cohorts_dir is not None else config.get("cohorts_dir")
    if not cohorts_dir:
        return config
    cohorts_file = cohorts_file or config.get("cohorts_file") or COHORTS_FILE
    folder = Path(cohorts_dir)
    fix_dir = ("pass the folder holding the cohorts' files, e.g. `--config cohorts_dir=../shared/realbulk`, "
               "or leave `cohorts_dir` out to run without them")
    if not folder.is_dir():
        raise DeconflowError(folder, "folder given as `cohorts_dir` does not exist", fix_dir)
    try:
        cohorts = yaml.safe_load(Path(cohorts_file).read_text()) or {}
    except OSError as error:
        raise DeconflowError(cohorts_file, f"cohorts file given as `cohorts_file` cannot be read ({error.strerror})",
                             f"give `cohorts_file` as an existing YAML file (default {COHORTS_FILE})") from None
    if not isinstance(cohorts, dict) or not all(isinstance(v, dict) for v in cohorts.values()):
        raise DeconflowError(cohorts_file, "not a mapping of dataset names to named bulks",
                             f"write it as {COHORTS_FILE} is written: `<dataset>: {{<bulk>: {{path: ..., truth: ...}}}}`")
    merged = dict(config)
    datasets = dict(merged.get("datasets") or {})
    for dataset, bulks in cohorts.items():
        if dataset not in datasets:
            continue
        entry = dict(datasets[dataset])
        own = entry.get("bulk") or {}
        if not isinstance(own, dict):  # `bulk: PATH` is `bulk: {<SINGLE_BULK_NAME>: {path: PATH}}`
            from .truth import SINGLE_BULK_NAME

            own = {SINGLE_BULK_NAME: {"path": own}}
        own = dict(own)
        for name, bulk in bulks.items():
            if name in own:
                raise DeconflowError(cohorts_file, f"bulk {name!r} is already a bulk of dataset {dataset!r} in the config",
                                     f"rename the cohort in {cohorts_file} or the bulk in the config")
            own[name] = _cohort_entry(bulk, folder, cohorts_file, fix_dir)
        entry["bulk"] = own
        datasets[dataset] = entry
    merged["datasets"] = datasets
    return merged


def _cohort_entry(bulk: dict, folder: Path, cohorts_file, fix_dir: str) -> dict:
    """One cohort of a cohorts file with its ``path`` / ``truth`` / ``cell_mrna`` under ``folder``."""
    entry = dict(bulk)
    for key in ("path", "truth", "cell_mrna"):
        if entry.get(key) is None:
            continue
        path = folder / entry[key]
        if not path.exists():
            raise DeconflowError(path, f"file named as `{key}` in {cohorts_file} is not in `cohorts_dir` {folder}", fix_dir)
        entry[key] = str(path)
    return entry
