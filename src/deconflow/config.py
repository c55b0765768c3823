"""Config validation with messages that name the config file, the key and the fix.

snakemake's ``validate()`` reports a schema violation as a jsonschema dump that names neither the
config file nor what to change. When ``validate()`` fails, the Snakefile calls ``check_config``
on the same schema, which raises one ``DeconflowError`` line instead (a valid config is checked
only once, by ``validate()``, which also fills in the defaults).
"""

from __future__ import annotations

import re
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
        import difflib

        close = difflib.get_close_matches(str(unknown[0]), allowed, n=1, cutoff=0.6)
        fix = (f"did you mean `{close[0]}`? " if close else "") + \
            f"remove it or correct its spelling; allowed keys here: {allowed} (see {README})"
    elif error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        path.append(missing)
        fix = f"add `{_key_name(path)}` (see {README})"
    elif "propertyNames" in error.absolute_schema_path:  # a name under e.g. `datasets`
        problem = f"name {error.instance!r} not allowed ({error.message})"
        fix = f"rename it; names under `{_key_name(path)}` must match {error.validator_value!r} (see {README})"
    elif error.validator == "enum":
        fix = f"use one of {error.validator_value}"
    elif error.validator == "type" and number_text_fix(error.instance) and error.validator_value in ("number", "integer"):
        problem, fix = number_text_fix(error.instance)
        if error.validator_value == "integer":
            number = float(error.instance)
            fix = f"write {int(number)}" if number.is_integer() else "write an integer"
    elif error.validator == "type":
        fix = f"give `{_key_name(path)}` a value of type {error.validator_value} (see {README})"
    else:
        fix = f"change `{_key_name(path)}` to a value allowed by {_shown(schema_path)} (see {README})"
    raise DeconflowError(_source(path, list(config_files), overrides), f"`{_key_name(path) or '(top level)'}`: {problem}", fix)


# --------------------------------------------------------------------------- YAML 1.1 quirks, `train`
#: text YAML 1.1 (PyYAML) leaves a string although the user wrote a number: an exponent without a
#: dot (``5e-1``, ``1e2``) or without a sign
_SCIENTIFIC_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
#: the words YAML 1.1 reads as booleans
_YAML_BOOLEANS = {True: ("on", "yes", "y", "true"), False: ("off", "no", "n", "false")}


def number_text_fix(value) -> str | None:
    """For text YAML 1.1 read from a number in scientific notation (``'5e-1'``): the cause and the
    value to write instead; None for anything else."""
    if not isinstance(value, str) or not _SCIENTIFIC_TEXT.match(value.strip()):
        return None
    number = float(value)
    plain = str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    mantissa, _, exponent = value.strip().lower().partition("e")
    dotted = (mantissa if "." in mantissa else mantissa + ".0") + "e" + (exponent if exponent[:1] in "+-" else "+" + exponent)
    return (f"{value!r} is text to YAML 1.1 (PyYAML, snakemake): a number in scientific notation needs a dot and a signed "
            f"exponent", f"write {plain} or {dotted}")


def _spelled(config_files, value: bool) -> str:
    """How a key read as a boolean was written in the config files (on, yes, ...), if found."""
    words = _YAML_BOOLEANS[value]
    for config_file in reversed(list(config_files)):
        try:
            text = Path(config_file).read_text()
        except OSError:
            continue
        found = re.search(r"^\s*(" + "|".join(words) + r")\s*:", text, re.IGNORECASE | re.MULTILINE)
        if found:
            return found.group(1)
    return words[0]


def check_key_names(config: dict, config_files: Iterable[str] = (), overrides: dict | None = None, path: tuple = ()) -> None:
    """Every key of the config is text: a name YAML 1.1 read as a boolean (a bulk named ``on``,
    ``no``, ``yes``) or a number (a cohort ``2019``) is refused naming it and the quoting fix."""
    if not isinstance(config, dict):
        return
    for key, value in config.items():
        if not isinstance(key, str):
            where = _key_name(list(path))
            if isinstance(key, bool):
                word = _spelled(config_files, key)
                problem = f"the name `{word}` under `{where}` was read by YAML 1.1 as {str(key).lower()}, not as a name"
                fix = f'quote it: "{word}":'
            else:
                problem = f"the name {key!r} under `{where}` was read by YAML as a {type(key).__name__ if key is not None else 'null'}, not as text"
                fix = f'quote it: "{key}":' if key is not None else "give it a name"
            raise DeconflowError(_source(list(path), list(config_files), overrides), problem, fix)
        check_key_names(value, config_files, overrides, path + (key,))


def _literal_defaults(source: Path, name: str) -> dict:
    """The keys (and literal values, else None) of the dict assigned to ``name`` in ``source``, read
    with ``ast`` so that the workflow build does not import torch."""
    import ast

    tree = ast.parse(source.read_text())
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(node.value, ast.Dict):
            out = {}
            for key, value in zip(node.value.keys, node.value.values):
                try:
                    out[ast.literal_eval(key)] = ast.literal_eval(value)
                except ValueError:
                    out[ast.literal_eval(key)] = None
            return out
    return {}


def train_settings_allowed() -> tuple[dict, dict[str, dict]]:
    """(trainer defaults, {learned model: its DEFAULTS}) read from the library sources."""
    from .registry import MODULES

    package = Path(__file__).parent
    trainer = _literal_defaults(package / "training.py", "TRAINER_DEFAULTS")
    models = {name: _literal_defaults(package / "models" / f"{module.rsplit('.', 1)[-1]}.py", "DEFAULTS")
              for name, (module, learned) in MODULES.items() if learned}
    return trainer, models


def _type_problem(key: str, value, default):
    """(problem, fix) when ``value`` cannot stand for a setting whose default is ``default``."""
    text = number_text_fix(value)
    if text and isinstance(default, (int, float)) and not isinstance(default, bool):
        problem, fix = text
        if isinstance(default, int) and not float(value).is_integer():
            fix = "write an integer"
        elif isinstance(default, int):
            fix = f"write {int(float(value))}"
        return problem, fix
    if default is None or value is None:
        return None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        return None
    if ok:
        return None
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "text", list: "a list"}[type(default)]
    return f"{value!r} is not {kind}", f"give {kind} (the default is {default!r})"


def check_train_section(config: dict, config_files: Iterable[str] = (), overrides: dict | None = None) -> None:
    """Validate ``train`` like the schema validates the rest: its keys against the trainer's
    settings and every learned model's (``train.<key>`` applies to each model that has it), its
    sub-sections against the learned models' names, each sub-section against that model's
    settings (and the trainer's). An unknown key names the closest allowed one (difflib); a value
    of the wrong type (``epochs: 1e2``, text to YAML 1.1) names the fix."""
    import difflib

    from .registry import MODULES

    train = config.get("train")
    if train is None:
        return
    files = list(config_files)

    def fail(path, problem, fix):
        raise DeconflowError(_source(path, files, overrides), f"`{_key_name(path)}`: {problem}", f"{fix} (see {README})")

    if not isinstance(train, dict):
        fail(["train"], f"{train!r} is not a section", "give `train` as keys: values")
    trainer, models = train_settings_allowed()
    shared = {**{k: v for d in models.values() for k, v in d.items()}, **trainer}

    def check(path, section, allowed):
        for key, value in section.items():
            if key not in allowed:
                close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
                fix = (f"did you mean `{close[0]}`? Rename it" if close else
                       f"remove it or correct its spelling; allowed here: {sorted(allowed)}")
                fail(path + [key], "unknown training setting (it would be ignored)", fix)
            wrong = _type_problem(key, value, allowed[key])
            if wrong:
                fail(path + [key], *wrong)

    for key, value in train.items():
        if isinstance(value, dict):
            if key in models:
                check(["train", key], value, {**trainer, **models[key]})
                continue
            if key in MODULES:
                fail(["train", key], f"{key} is not trained by the trainer (no `train.{key}` settings)",
                     "remove the section; nnls is set in `linear_fit`, nnls_reads in `read_fit`")
            close = difflib.get_close_matches(str(key), list(models), n=1, cutoff=0.6)
            fail(["train", key], "not a learned model's name: its settings would be ignored",
                 (f"did you mean `{close[0]}`? Rename the section" if close else "rename or remove the section")
                 + f"; sections allowed under `train`: {sorted(models)}")
        else:
            check(["train"], {key: value}, shared)


def typed_overrides(config: dict, overrides: dict | None, path: tuple = ()) -> None:
    """Give nested ``--config`` values the types a config file would give them, in ``config``.

    Snakemake parses a ``--config key={...}`` mapping with YAML's BaseLoader, so every value
    inside it is text (``train={"hpvade": {"lambda_bulk": 6.0}}`` sets the string ``'6.0'``).
    Each such text is read again as a config file reads it (``yaml.safe_load``: numbers, true /
    false, null); text that stays text (``5e-1`` in YAML 1.1) is left for the checks to name."""
    if not isinstance(overrides, dict):
        return
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            typed_overrides(config[key], value, path + (key,))
        elif path and isinstance(value, str) and config.get(key) == value:
            try:
                typed = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
            if typed is None or isinstance(typed, (bool, int, float)):
                config[key] = typed


def check_config_text(config: dict, config_files: Iterable[str] = (), overrides: dict | None = None) -> None:
    """What the schema cannot see, checked at workflow build before it: names YAML read as
    booleans or numbers, and the ``train`` section (:func:`check_train_section`). Nested
    ``--config`` values are typed first (:func:`typed_overrides`)."""
    typed_overrides(config, overrides)
    check_key_names(config, config_files, overrides)
    check_train_section(config, config_files, overrides)


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
