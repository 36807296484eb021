"""params/*.yaml: read, check against each notebook's parameters cell, expand into matrix cells.

Everything a user can get wrong here (YAML, keys, notebook and preset names, parameter names, types and
values) raises ConfigError naming the bad thing and the valid ones, before anything runs.

A preset declares its report's readings (readings.py checks them) and published figures (published.py); the
checks all of them share are in checks.py. Each reading is its own block of runs: "preset R2" runs the primary
reading, "preset R2:as-intended" another one (the label after "preset " is the runs' protocol).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import yaml

from lenet_lib.analysis.results import protocol_label
from lenet_lib.base.validate import check_parameters
from lenet_lib.running.checks import (_UNKNOWN, INJECTED, PROFILES, ConfigError, _check_names, did_you_mean, expand,
                                      listing)
from lenet_lib.running.published import _check_figures, where_columns
from lenet_lib.running.readings import _check_readings, _check_scales, _check_text_map

PROFILES_FILE = "profiles.yaml"         # params/profiles.yaml: how each profile runs the presets
STAGED = "decide"       # its other block: the staged design of `--profile decide` (running/decide.py reads it)
PROFILE_KEYS = ("verdicts", "protocol_parameters")
FILE_KEYS = ("notebook", "title", "parameters", "profiles", "presets")
BLOCK_KEYS = ("matrix", "parameters")
PRESET_KEYS = ("matrix", "parameters", "profiles", "sources", "readings", "reading", "published")


@dataclass
class NotebookParams:
    name: str
    title: str
    file: Path                      # params/<name>.yaml
    path: Path                      # notebooks/<name>.ipynb
    parameters: dict                # the file's fixed parameters
    blocks: dict                    # "profile quick" / "preset R1" / "preset R1:other" -> {"matrix": ...,
                                    #   "parameters": ...; preset blocks also "preset", "reading", "primary"}
    defaults: dict = None           # the parameters cell: name -> default value
    presets: dict = None            # preset name -> {"readings": {name: reading, primary first}, "sources",
                                    #   "published": [figure, ...], "profiles": {profile: parameters},
                                    #   "reading": the primary reading's summary}


@dataclass
class Profile:
    """params/profiles.yaml: one profile's scale for the seed reports' protocols (the presets)."""
    name: str
    verdicts: bool                  # False: a smoke run, whose claims table gives no verdicts
    protocol_parameters: dict       # applied to a preset's runs where the notebook has the parameter


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error (not "the last one wins").
    Merge keys (`<<: *anchor`) are ordinary YAML: the keys written beside one may override the merged ones."""


MERGE_TAG = "tag:yaml.org,2002:merge"


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == MERGE_TAG:       # SafeLoader's construct_mapping merges it below
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: Path):
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
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


def _check_block(file: Path, label: str, block, defaults: dict, fixed: dict, nb_path: Path,
                 keys=BLOCK_KEYS) -> dict:
    """Check one profile/preset block; return it as {"matrix": {...}, "parameters": {...}} (and, for a
    preset, its other keys as given)."""
    where = f"{file}: {label}"
    block = {} if block is None else block
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {listing(keys)}")
    unknown = [k for k in block if k not in keys]
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {listing(unknown)}; valid keys: {listing(keys)}")
    matrix, parameters = block.get("matrix") or {}, block.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ConfigError(f"{where}: parameters must be a mapping of name: value")
    if not isinstance(matrix, dict) or not all(isinstance(v, list) and v for v in matrix.values()):
        raise ConfigError(f"{where}: matrix must map each name to a non-empty list of values")
    _check_names(where, parameters, defaults, nb_path)
    for name, values in matrix.items():
        for value in values:
            _check_names(where, {name: value}, defaults, nb_path)
    for combination in expand(matrix):
        try:
            check_parameters({**fixed, **parameters, **combination})
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return {**block, "matrix": matrix, "parameters": parameters}


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
    blocks, preset_info = {}, {}
    for block_name, block in profiles.items():
        blocks[f"profile {block_name}"] = _check_block(file, f"profile {block_name}", block, defaults, fixed,
                                                       nb_path)
    for block_name, block in presets.items():
        label = f"preset {block_name}"
        if not isinstance(block_name, str) or ":" in block_name or not block_name.strip():
            raise ConfigError(f"{file}: preset name {block_name!r} is not valid; a name without ':' (e.g. R2)")
        checked = _check_block(file, label, block, defaults, fixed, nb_path, keys=PRESET_KEYS)
        scales = _check_scales(f"{file}: {label}", checked.pop("profiles", None), defaults, nb_path)
        readings = _check_readings(f"{file}: {label}", checked, defaults, fixed, nb_path)
        sources = _check_text_map(f"{file}: {label}", "sources", checked.get("sources"))
        figures = _check_figures(f"{file}: {label}", checked.get("published"),
                                 where_columns(defaults, {**fixed, **checked["parameters"]}, checked["matrix"],
                                               *(r.get("parameters") or {} for r in readings.values())))
        for reading_name, reading in readings.items():
            protocol = protocol_label(block_name, reading_name, reading["primary"])
            blocks[f"preset {protocol}"] = {"matrix": checked["matrix"], "parameters": checked["parameters"],
                                            "preset": block_name, "reading": reading_name,
                                            "primary": reading["primary"], "run_at": reading["run_at"]}
        primary = next(iter(readings.values()))
        preset_info[block_name] = {"reading": primary["summary"], "readings": readings, "sources": sources,
                                   "published": figures, "profiles": scales}
    return NotebookParams(name, str(data.get("title") or name), file, nb_path, fixed, blocks,
                          defaults, preset_info)


def load_params(params_dir: Path, notebooks_dir: Path) -> dict[str, NotebookParams]:
    """Every params/<notebook>.yaml, fully checked (all profiles and presets, each preset at every
    profile's scale), by notebook name."""
    files = sorted(f for f in Path(params_dir).glob("*.yaml") if f.name != PROFILES_FILE)
    if not files:
        raise ConfigError(f"no params files (*.yaml) in {params_dir}")
    params = {f.stem: load_notebook_params(f, Path(notebooks_dir)) for f in files}
    profiles = load_profiles(params_dir)
    for nb in params.values():                  # every preset run of every profile passes the checks
        for label in nb.blocks:
            if label.startswith("preset "):
                for profile in PROFILES:
                    run_parameters(nb, label, profile, profiles)
    return params


def load_profiles(params_dir: Path) -> dict[str, Profile]:
    """params/profiles.yaml, checked: quick, default and full, each with verdicts and protocol_parameters."""
    path = Path(params_dir) / PROFILES_FILE
    if not path.exists():
        raise ConfigError(f"{path} does not exist; it says how each profile ({listing(PROFILES)}) runs the "
                          f"presets (see CONTRIBUTING.md)")
    data = read_yaml(path)
    absent, extra = [p for p in PROFILES if p not in data], [p for p in data if p not in (*PROFILES, STAGED)]
    if absent or extra:
        what = f"missing profile(s) {listing(absent)}" if absent else f"unknown profile(s) {listing(extra)}"
        raise ConfigError(f"{path}: {what}; the file defines exactly {listing(PROFILES)}")
    profiles = {}
    for name in PROFILES:
        block = data[name] or {}
        if not isinstance(block, dict) or any(k not in PROFILE_KEYS for k in block):
            raise ConfigError(f"{path}: {name}: expected a mapping with keys {listing(PROFILE_KEYS)}")
        verdicts, parameters = block.get("verdicts", True), block.get("protocol_parameters") or {}
        if not isinstance(verdicts, bool):
            raise ConfigError(f"{path}: {name}: verdicts={verdicts!r} is not valid; expected true or false")
        if not isinstance(parameters, dict):
            raise ConfigError(f"{path}: {name}: protocol_parameters must be a mapping of name: value")
        try:
            check_parameters(parameters)
        except ValueError as exc:
            raise ConfigError(f"{path}: {name}: {exc}") from None
        profiles[name] = Profile(name, verdicts, parameters)
    return profiles


def run_parameters(nb: NotebookParams, label: str, profile: str, profiles: dict[str, Profile]) -> list[dict]:
    """The parameters of each run of one block, in matrix order.

    Merge order: notebook defaults < the file's parameters < the block's parameters < (presets only) the
    profile's protocol_parameters that the notebook has < the preset's own profiles.<profile> < the
    reading's parameters < the reading's profiles.<profile> < the matrix combination. So a preset keeps its protocol and a profile changes only its scale (seeds; data and
    epochs for the quick smoke run). A protocol without a validation split (val_size 0) keeps none: the
    smoke run then runs the same code paths as the protocol itself.
    """
    block = nb.blocks[label]
    scale, where = {}, None
    if "preset" in block:
        preset = nb.presets[block["preset"]]
        reading = preset["readings"][block["reading"]]
        own = preset["profiles"].get(profile, {})
        scale = {k: v for k, v in profiles[profile].protocol_parameters.items() if k in nb.defaults}
        where = f"{nb.file}: {label} at profile {profile}"
        _check_names(where, scale, nb.defaults, nb.path)
        if {**nb.parameters, **block["parameters"], **reading["parameters"]}.get("val_size") == 0:
            scale.pop("val_size", None)
        scale.update(own)
        scale.update(reading["parameters"])
        scale.update(reading["profiles"].get(profile, {}))
    runs = []
    for combination in expand(block["matrix"]):
        parameters = {**nb.parameters, **block["parameters"], **scale, **combination}
        if where:
            try:
                check_parameters(parameters)
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}") from None
        runs.append(parameters)
    return runs


def select(params: dict[str, NotebookParams], only, profile, preset) -> list[tuple[NotebookParams, str]]:
    """(notebook, block label) for every block that runs.

    Without a preset, a profile runs every notebook's own block of that profile and every preset (at the
    profile's scale); with one, only the notebooks' blocks of that preset run (every reading's, or one
    reading's with "R2:as-intended")."""
    names = list(params)
    for name in only or []:
        if name not in params:
            raise ConfigError(f"unknown notebook {name!r} in --only{did_you_mean(name, names)}; "
                              f"valid: {listing(names)}")
    chosen = [params[n] for n in names if not only or n in only]
    if preset is None:      # a reading runs at the profiles of its run_at (every profile unless it says)
        return [(p, label) for p in chosen for label, block in p.blocks.items()
                if label == f"profile {profile}" or (label.startswith("preset ") and profile in block["run_at"])]
    defined = {}        # preset -> the notebooks that define it
    for p in params.values():
        for block_name in p.presets:
            defined.setdefault(block_name, []).append(p.name)
    name, _, reading = preset.partition(":")        # "R2" runs every reading, "R2:as-intended" one
    # "R2" runs the readings its run_at puts at this profile; "R2:as-intended" runs that reading whatever it says
    selected = [(p, label) for p in chosen for label, block in p.blocks.items()
                if block.get("preset") == name and (block["reading"] == reading
                                                    or (not reading and profile in block["run_at"]))]
    if not selected:
        known = "; ".join(f"{k} ({', '.join(v)})" for k, v in sorted(defined.items()))
        scope = f" among {listing(only)}" if only and name in defined else ""
        if reading and name in defined:
            names = sorted({r for p in params.values() if name in p.presets for r in p.presets[name]["readings"]})
            raise ConfigError(f"preset {name!r} has no reading {reading!r}{did_you_mean(reading, names)}; "
                              f"its readings: {listing(names)}")
        raise ConfigError(f"preset {name!r} is not defined{scope}; presets defined: {known or '(none)'}")
    return selected
