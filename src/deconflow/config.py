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
