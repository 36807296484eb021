"""params/*.yaml: read, check against each notebook's parameters cell, expand into matrix cells.

Everything a user can get wrong here (YAML, keys, notebook and preset names, parameter names, types and
values) raises ConfigError naming the bad thing and the valid ones, before anything runs.
"""
from __future__ import annotations

import ast
import difflib
import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml

from .validate import check_parameters

PROFILES = ("quick", "default", "full")
FILE_KEYS = ("notebook", "title", "parameters", "profiles", "presets")
BLOCK_KEYS = ("matrix", "parameters")
INJECTED = ("output_dir", "run_id")       # set by the runner for every run
_UNKNOWN = object()     # a default that is not a literal (e.g. 2 ** 10): its type is not checked


class ConfigError(ValueError):
    """A user error in params/, on the command line or in a notebook's parameters cell."""


@dataclass
class NotebookParams:
    name: str
    title: str
    file: Path                      # params/<name>.yaml
    path: Path                      # notebooks/<name>.ipynb
    parameters: dict                # the file's fixed parameters
    blocks: dict                    # "profile quick" / "preset R1" -> {"matrix": ..., "parameters": ...}


def listing(values) -> str:
    return ", ".join(map(str, values)) or "(none)"


def did_you_mean(name, valid) -> str:
    close = difflib.get_close_matches(str(name), list(map(str, valid)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def read_yaml(path: Path):
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {listing(FILE_KEYS)}, got {type(data).__name__}")
    return data


def notebook_defaults(path: Path) -> dict:
    """{parameter: default value} of the notebook's `parameters` cell (_UNKNOWN when not a literal)."""
    import papermill
    defaults = {}
    for name, info in papermill.inspect_notebook(str(path)).items():
        try:
            defaults[name] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError, TypeError):
            defaults[name] = _UNKNOWN
    return defaults


def _check_type(where: str, name: str, value, default) -> None:
    """value must have the type of the notebook's default (an int is fine for a float).

    A None default takes anything; a None value passes too (null means "all" or "off", e.g.
    train_size: null), and check_parameters decides whether the parameter allows it.
    """
    if default is None or default is _UNKNOWN or value is None:
        return
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        hint = ""
        if isinstance(value, str):
            try:
                float(value)
                hint = " (YAML reads numbers like 1e-3 as strings: write 1.0e-3)"
            except ValueError:
                pass
        raise ConfigError(f"{where}: {name}={value!r} has type {type(value).__name__}, but the notebook's "
                          f"default {default!r} has type {type(default).__name__}{hint}")


def _check_block(file: Path, label: str, block, defaults: dict, fixed: dict, nb_path: Path) -> dict:
    """Check one profile/preset block; return it as {"matrix": {...}, "parameters": {...}}."""
    where = f"{file}: {label}"
    block = {} if block is None else block
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {listing(BLOCK_KEYS)}")
    unknown = [k for k in block if k not in BLOCK_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {listing(unknown)}; valid keys: {listing(BLOCK_KEYS)}")
    matrix, parameters = block.get("matrix") or {}, block.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ConfigError(f"{where}: parameters must be a mapping of name: value")
    if not isinstance(matrix, dict) or not all(isinstance(v, list) and v for v in matrix.values()):
        raise ConfigError(f"{where}: matrix must map each name to a non-empty list of values")
    for name, values in [(n, [v]) for n, v in parameters.items()] + list(matrix.items()):
        if name in INJECTED:
            raise ConfigError(f"{where}: {name} is set by the runner; remove it")
        if name not in defaults:
            raise ConfigError(f"{where}: parameter {name!r} is not in the parameters cell of {nb_path}"
                              f"{did_you_mean(name, defaults)}; valid names: "
                              f"{listing(sorted(set(defaults) - set(INJECTED)))}")
        for value in values:
            _check_type(where, name, value, defaults[name])
    for combination in expand(matrix):
        try:
            check_parameters({**fixed, **parameters, **combination})
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return {"matrix": matrix, "parameters": parameters}


def load_notebook_params(file: Path, notebooks_dir: Path) -> NotebookParams:
    data = read_yaml(file)
    unknown = [k for k in data if k not in FILE_KEYS]
    if unknown:
        raise ConfigError(f"{file}: unknown key(s) {listing(unknown)}; valid keys: {listing(FILE_KEYS)}")
    name = data.get("notebook")
    if name != file.stem:
        raise ConfigError(f"{file}: notebook: {name!r} must name the notebook of this file, {file.stem!r}")
    nb_path = notebooks_dir / f"{name}.ipynb"
    if not nb_path.exists():
        raise ConfigError(f"{file}: notebook {nb_path} does not exist")
    defaults = notebook_defaults(nb_path)
    missing = [p for p in INJECTED if p not in defaults]
    if missing:
        raise ConfigError(f"{nb_path}: its parameters cell must define {listing(missing)} (the runner injects "
                          f"output_dir and run_id; see CONTRIBUTING.md)")
    fixed = _check_block(file, "parameters", {"parameters": data.get("parameters")}, defaults, {}, nb_path)
    fixed = fixed["parameters"]
    profiles, presets = data.get("profiles") or {}, data.get("presets") or {}
    if not isinstance(profiles, dict) or not isinstance(presets, dict):
        raise ConfigError(f"{file}: profiles and presets must be mappings of name: block")
    absent = [p for p in PROFILES if p not in profiles]
    extra = [p for p in profiles if p not in PROFILES]
    if absent or extra:
        what = f"missing profile(s) {listing(absent)}" if absent else f"unknown profile(s) {listing(extra)}"
        raise ConfigError(f"{file}: {what}; every file defines exactly {listing(PROFILES)}")
    blocks = {}
    for kind, group in (("profile", profiles), ("preset", presets)):
        for block_name, block in group.items():
            label = f"{kind} {block_name}"
            blocks[label] = _check_block(file, label, block, defaults, fixed, nb_path)
    return NotebookParams(name, str(data.get("title") or name), file, nb_path, fixed, blocks)


def load_params(params_dir: Path, notebooks_dir: Path) -> dict[str, NotebookParams]:
    """Every params/*.yaml, fully checked (all profiles and presets), by notebook name."""
    files = sorted(Path(params_dir).glob("*.yaml"))
    if not files:
        raise ConfigError(f"no params files (*.yaml) in {params_dir}")
    return {f.stem: load_notebook_params(f, Path(notebooks_dir)) for f in files}


def expand(matrix: dict) -> list[dict]:
    """The cartesian product of the matrix, in file order: one dict per run."""
    return [dict(zip(matrix, values)) for values in itertools.product(*matrix.values())]


def select(params: dict[str, NotebookParams], only, profile, preset) -> list[tuple[NotebookParams, str]]:
    """(notebook, block label) for every notebook that runs."""
    names = list(params)
    for name in only or []:
        if name not in params:
            raise ConfigError(f"unknown notebook {name!r} in --only{did_you_mean(name, names)}; "
                              f"valid: {listing(names)}")
    chosen = [params[n] for n in names if not only or n in only]
    if preset is None:
        return [(p, f"profile {profile}") for p in chosen]
    defined = {}        # preset -> the notebooks that define it
    for p in params.values():
        for label in p.blocks:
            kind, block_name = label.split(" ", 1)
            if kind == "preset":
                defined.setdefault(block_name, []).append(p.name)
    label = f"preset {preset}"
    selected = [(p, label) for p in chosen if label in p.blocks]
    if not selected:
        known = "; ".join(f"{k} ({', '.join(v)})" for k, v in sorted(defined.items()))
        scope = f" among {listing(only)}" if only and preset in defined else ""
        raise ConfigError(f"preset {preset!r} is not defined{scope}; presets defined: {known or '(none)'}")
    return selected
