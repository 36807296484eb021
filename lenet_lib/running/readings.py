"""A preset's readings of its report (`readings:`, ../READINGS_SCHEMA.md), checked: named sets of parameters on
top of the preset's, exactly one primary, each with `sources` (the report's lines), `open` (why a choice was
made where the report is silent) and its own scale per profile."""
from __future__ import annotations

import re
from pathlib import Path

from lenet_lib.base.validate import check_parameters
from lenet_lib.running.checks import PROFILES, ConfigError, _check_names, expand, listing

READING_KEYS = ("primary", "summary", "parameters", "sources", "open", "profiles", "run_at")
LEGACY_READING = "as-read"      # the name of the one primary reading an old `reading:` text stands for
READING_NAME = re.compile(r"[a-z0-9]+([-_][a-z0-9]+)*")     # a slug: it becomes part of a protocol label


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

