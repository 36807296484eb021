"""params/*.yaml: read, check against each notebook's parameters cell, expand into matrix cells.

Everything a user can get wrong here (YAML, keys, notebook and preset names, parameter names, types and
values) raises ConfigError naming the bad thing and the valid ones, before anything runs.

A preset declares its report's readings (`readings:`, ../READINGS_SCHEMA.md): named sets of parameters on top
of the preset's, exactly one primary, each with `sources` (the report's lines) and `open` (why a choice was
made where the report is silent). Each reading is its own block of runs: "preset R2" runs the primary
reading, "preset R2:as-intended" another one (the label after "preset " is the runs' protocol).
"""
from __future__ import annotations

import ast
import difflib
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from lenet_lib.analysis.results import protocol_label
from lenet_lib.analysis.tidy import VARIANT_ORDER
from lenet_lib.base.choices import ARCHS, MODEL_DEFAULTS
from lenet_lib.base.choices import TIMING_KINDS
from lenet_lib.base.validate import check_parameters

PROFILES = ("quick", "default", "full")
PROFILES_FILE = "profiles.yaml"         # params/profiles.yaml: how each profile runs the presets
STAGED = "decide"       # its other block: the staged design of `--profile decide` (running/decide.py reads it)
PROFILE_KEYS = ("verdicts", "protocol_parameters")
FILE_KEYS = ("notebook", "title", "parameters", "profiles", "presets")
BLOCK_KEYS = ("matrix", "parameters")
PRESET_KEYS = ("matrix", "parameters", "profiles", "sources", "readings", "reading", "published")
READING_KEYS = ("primary", "summary", "parameters", "sources", "open", "profiles", "run_at")
LEGACY_READING = "as-read"      # the name of the one primary reading an old `reading:` text stands for
READING_NAME = re.compile(r"[a-z0-9]+([-_][a-z0-9]+)*")     # a slug: it becomes part of a protocol label
FIGURE_KEYS = ("figure", "value", "metric", "epoch", "where", "versus", "reference", "rounded", "note", "timing")
METRICS = ("test_acc", "train_acc", "val_acc", "time_ratio", "forward_ratio", "parameters")
RATIO_METRICS = ("time_ratio", "forward_ratio")
INJECTED = ("output_dir", "run_id")       # set by the runner for every run
# Columns a figure's where/versus may name beside the notebook's parameters and `variant`: what every
# training row carries (core/train.py: TrainSpec's fields, the data split's, device, precision, kernels),
# the timing table's (label, implementation) and the layers table's (model, layer, type, part).
WHERE_COLUMNS = (*MODEL_DEFAULTS, "arch", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs",
                 "seed", "model_id", "dataset", "train_size", "val_size", "test_size", "input_size", "resize",
                 "normalize", "split_seed", "device", "precision", "kernels", "status", "stage", "framework",
                 "label", "implementation", "model", "layer", "type", "part")
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


def listing(values) -> str:
    return ", ".join(map(str, values)) or "(none)"


def did_you_mean(name, valid) -> str:
    close = difflib.get_close_matches(str(name), list(map(str, valid)), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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


def _check_names(where: str, parameters: dict, defaults: dict, nb_path: Path) -> None:
    """Every name is in the notebook's parameters cell (and not injected), every value of its type."""
    for name, value in parameters.items():
        if name in INJECTED:
            raise ConfigError(f"{where}: {name} is set by the runner; remove it")
        if name not in defaults:
            raise ConfigError(f"{where}: parameter {name!r} is not in the parameters cell of {nb_path}"
                              f"{did_you_mean(name, defaults)}; valid names: "
                              f"{listing(sorted(set(defaults) - set(INJECTED)))}")
        _check_type(where, name, value, defaults[name])


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


def where_columns(defaults: dict, parameters: dict, matrix: dict, *more: dict) -> dict:
    """{column: its valid values, or None for any value of a valid type} that a figure's where/versus may
    name: the notebook's parameters, the columns every training row and run table carries (WHERE_COLUMNS)
    and `variant`. A column whose values a list parameter of the preset enumerates (dropout: dropouts,
    batch_size: batch_sizes, ...) takes those values or the model's default; variant and arch their names."""
    columns = {name: None for name in [*defaults, *WHERE_COLUMNS] if name not in INJECTED}
    columns.update(variant=tuple(VARIANT_ORDER), arch=tuple(ARCHS))
    merged = {**defaults, **parameters}
    for name in list(columns):     # more: the readings' own parameters, each a set of runs of the preset
        lists = [merged.get(f"{name}s")] + list(matrix.get(f"{name}s", [])) + [m.get(f"{name}s") for m in more]
        values = [v for values in lists if isinstance(values, (list, tuple)) for v in values]
        if values:
            columns[name] = tuple(dict.fromkeys([*values, *([MODEL_DEFAULTS[name]] if name in MODEL_DEFAULTS else [])]))
    return columns


def _same(a, b) -> bool:
    """Equal as the scorecard compares them (tidy.matches): numbers within float rounding, True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _check_where(at: str, key: str, where: dict, columns: dict) -> None:
    for column, value in where.items():
        if column not in columns:
            raise ConfigError(f"{at}: {key} names column {column!r}, which no run of this notebook has"
                              f"{did_you_mean(column, columns)}; valid columns: {listing(sorted(columns))}")
        valid = columns[column]
        if valid is not None and not any(_same(value, v) for v in valid):
            raise ConfigError(f"{at}: {key}: {column}={value!r} is not a value this preset's runs have; "
                              f"choose one of {listing(valid)}{did_you_mean(value, valid)}")
        try:
            check_parameters({column: value})
        except ValueError as exc:
            raise ConfigError(f"{at}: {key}: {exc}") from None


def _check_figures(where: str, figures, columns: dict | None = None) -> list[dict]:
    """A preset's published figures (the reproduction scorecard's rows): keys, metrics and values; with
    `columns` (where_columns), the columns and values their where/versus name."""
    if figures is None:
        return []
    if not isinstance(figures, list):
        raise ConfigError(f"{where}: published must be a list of figures")
    for i, figure in enumerate(figures):
        at = f"{where}: published[{i}]"
        if not isinstance(figure, dict):
            raise ConfigError(f"{at}: expected a mapping with keys {listing(FIGURE_KEYS)}")
        unknown = [k for k in figure if k not in FIGURE_KEYS]
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {listing(unknown)}; valid keys: {listing(FIGURE_KEYS)}")
        for key in ("figure", "value", "metric"):
            if key not in figure:
                raise ConfigError(f"{at}: {key} is required")
        if figure["metric"] not in METRICS:
            raise ConfigError(f"{at}: metric={figure['metric']!r} is not valid; choose one of {listing(METRICS)}"
                              f"{did_you_mean(figure['metric'], METRICS)}")
        numbers = ["value"] + [k for k in ("reference", "rounded") if k in figure]
        for key in numbers:
            value = figure[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ConfigError(f"{at}: {key}={value!r} is not valid; expected a finite number >= 0")
            if figure["metric"].endswith("_acc") and value > 1:
                hint = f" ({value:g} % is {value / 100:g})" if value <= 100 else ""
                raise ConfigError(f"{at}: {key}={value!r} is not valid for {figure['metric']}: accuracies are "
                                  f"fractions in [0, 1]{hint}")
        ratio = figure["metric"] in RATIO_METRICS
        if ratio != ("reference" in figure):
            raise ConfigError(f"{at}: metric {figure['metric']} " + (
                "needs reference (the published value of the variant it is divided by)" if ratio else
                "takes no reference (only time_ratio and forward_ratio do)"))
        for key in ("where", "versus"):
            if not isinstance(figure.get(key, {}), dict):
                raise ConfigError(f"{at}: {key} must map column names to values")
            if columns is not None:
                _check_where(at, key, figure.get(key, {}), columns)
        if figure["metric"] == "time_ratio" and "versus" not in figure:
            raise ConfigError(f"{at}: metric time_ratio needs versus (the variant it is divided by)")
        if "timing" in figure and (figure["metric"] != "time_ratio" or figure["timing"] not in TIMING_KINDS):
            raise ConfigError(f"{at}: timing={figure['timing']!r} is not valid; only a time_ratio figure takes "
                              f"it, one of {listing(TIMING_KINDS)}")
        epoch = figure.get("epoch", "final")
        if epoch not in ("final", "best") and not (isinstance(epoch, int) and not isinstance(epoch, bool)
                                                   and epoch >= 1):
            raise ConfigError(f"{at}: epoch={epoch!r} is not valid; expected 'final', 'best' or an epoch "
                              f"number >= 1")
    return figures


def _check_text_map(where: str, key: str, value) -> dict:
    """sources / open: a mapping of detail name -> text."""
    value = {} if value is None else value
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                              for k, v in value.items()):
        raise ConfigError(f"{where}: {key} must map detail names to text (e.g. lr: \"R2 l.755\"), got {value!r}")
    return {k: " ".join(v.split()) for k, v in value.items()}


def _check_scales(where: str, scales, defaults: dict, nb_path: Path) -> dict:
    """profiles: {profile: parameters} for some of the profiles, each name in the notebook."""
    scales = scales or {}
    if not isinstance(scales, dict) or any(p not in PROFILES for p in scales):
        raise ConfigError(f"{where}: profiles must map some of {listing(PROFILES)} to parameters")
    for profile_name, overrides in scales.items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"{where}: profiles.{profile_name} must be a mapping of name: value")
        _check_names(f"{where}: profiles.{profile_name}", overrides, defaults, nb_path)
    return scales


def _check_readings(where: str, preset: dict, defaults: dict, fixed: dict, nb_path: Path) -> dict:
    """The preset's readings, checked, primary first: {name: {"primary", "summary", "parameters",
    "sources", "open", "profiles"}}. An old `reading:` text is one primary reading named as-read."""
    if "reading" in preset and "readings" in preset:
        raise ConfigError(f"{where}: give readings (one or more named readings) or the old reading text, "
                          f"not both")
    if "readings" not in preset:
        text = preset.get("reading") or ""
        if not isinstance(text, str):
            raise ConfigError(f"{where}: reading must be text")
        given = {LEGACY_READING: {"primary": True, "summary": text}}
    else:
        given = preset["readings"]
        if not isinstance(given, dict) or not given:
            raise ConfigError(f"{where}: readings must map reading names to readings (keys "
                              f"{listing(READING_KEYS)}), one of them primary: true")
    readings = {}
    for name, reading in given.items():
        at = f"{where}: reading {name!r}"
        if not isinstance(name, str) or not READING_NAME.fullmatch(name):
            raise ConfigError(f"{where}: reading name {name!r} is not valid; expected a slug of lowercase "
                              f"letters and digits joined by - or _ (e.g. as-printed)")
        if not isinstance(reading, dict):
            raise ConfigError(f"{at}: expected a mapping with keys {listing(READING_KEYS)}")
        unknown = [k for k in reading if k not in READING_KEYS]
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {listing(unknown)}; valid keys: {listing(READING_KEYS)}")
        primary, summary = reading.get("primary", False), reading.get("summary")
        if not isinstance(primary, bool):
            raise ConfigError(f"{at}: primary={primary!r} is not valid; expected true or false")
        if not isinstance(summary, str) or (not summary.strip() and "readings" in preset):
            raise ConfigError(f"{at}: summary is required: one paragraph of text saying what this reading is "
                              f"and why")
        parameters = reading.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ConfigError(f"{at}: parameters must be a mapping of name: value")
        _check_names(at, parameters, defaults, nb_path)
        in_matrix = [k for k in parameters if k in preset["matrix"]]
        if in_matrix:
            raise ConfigError(f"{at}: {listing(in_matrix)} is in the preset's matrix, which a reading cannot "
                              f"override; move it out of the matrix or into every reading's parameters")
        for combination in expand(preset["matrix"]):
            try:
                check_parameters({**fixed, **preset["parameters"], **parameters, **combination})
            except ValueError as exc:
                raise ConfigError(f"{at}: {exc}") from None
        run_at = reading.get("run_at", list(PROFILES))
        if (not isinstance(run_at, list) or not run_at or any(p not in PROFILES for p in run_at)
                or (primary and set(run_at) != set(PROFILES))):
            raise ConfigError(f"{at}: run_at={run_at!r} is not valid; expected a non-empty list of "
                              f"{listing(PROFILES)} (the primary reading runs at every profile)")
        readings[name] = {"primary": primary, "summary": " ".join(summary.split()), "parameters": parameters,
                          "run_at": [p for p in PROFILES if p in run_at],
                          "sources": _check_text_map(at, "sources", reading.get("sources")),
                          "open": _check_text_map(at, "open", reading.get("open")),
                          "profiles": _check_scales(at, reading.get("profiles"), defaults, nb_path)}
    primaries = [name for name, reading in readings.items() if reading["primary"]]
    if len(primaries) != 1:
        what = "none is" if not primaries else f"{len(primaries)} are ({listing(primaries)})"
        raise ConfigError(f"{where}: exactly one reading must be primary: true (declared before any run); "
                          f"{what}; readings: {listing(readings)}")
    return {name: readings[name] for name in sorted(readings, key=lambda n: not readings[n]["primary"])}


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


def expand(matrix: dict) -> list[dict]:
    """The cartesian product of the matrix, in file order: one dict per run."""
    return [dict(zip(matrix, values)) for values in itertools.product(*matrix.values())]


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
