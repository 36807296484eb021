"""One home for each default (base/choices.py's MODEL_DEFAULTS, the notebooks' parameters cells for a
notebook's own settings); every other place either takes it from there or says why it differs."""
import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import yaml

from lenet_lib.base.choices import MODEL_DEFAULTS
from lenet_lib.core import models
from lenet_lib.core.specs import TrainSpec
from lenet_lib.numpy_ref import net as numpy_net
from lenet_lib.running.params import notebook_defaults

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (REPO / "notebooks").glob("*.ipynb") if p.stem != "summary")
PARAM_FILES = sorted(p for p in (REPO / "params").glob("*.yaml") if p.name != "profiles.yaml")


def _signature_defaults(fn) -> dict:
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if n in MODEL_DEFAULTS}


def test_models_and_train_spec_take_their_defaults_from_choices():
    spec_defaults = {f.name: f.default for f in dataclasses.fields(TrainSpec) if f.name in MODEL_DEFAULTS}
    assert spec_defaults == MODEL_DEFAULTS
    assert _signature_defaults(models.build_lenet5) == MODEL_DEFAULTS
    assert _signature_defaults(numpy_net.build_lenet5) == MODEL_DEFAULTS


def _parameter_lines(path: Path) -> dict[str, str]:
    """{name: source line} of the notebook's cell tagged `parameters`."""
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    lines = {}
    for line in "".join(cell["source"]).splitlines():
        target = line.split("=", 1)[0].strip()
        if "=" in line and target.isidentifier():
            lines[target] = line
    return lines


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_restates_a_model_default_only_to_say_why_it_differs(path):
    """A model setting in a parameters cell equals the library's default, or its line says why not."""
    defaults = notebook_defaults(path)
    unexplained = []
    for name, line in _parameter_lines(path).items():
        if name in MODEL_DEFAULTS and defaults[name] != MODEL_DEFAULTS[name] and "#" not in line:
            unexplained.append(f"{name} = {defaults[name]!r} (library default {MODEL_DEFAULTS[name]!r})")
    assert not unexplained, f"{path.name}: differs from base/choices.py without a comment: {unexplained}"


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.stem)
def test_profiles_set_only_what_differs_from_the_notebook(path):
    """A profile's parameters that repeat the notebook's own default are a second home that can drift.
    (Presets are exempt: a preset states its report's whole protocol on purpose.)"""
    data = yaml.safe_load(path.read_text())
    defaults = notebook_defaults(REPO / "notebooks" / f"{data['notebook']}.ipynb")
    repeated = []
    blocks = {"parameters": data.get("parameters") or {}}
    blocks |= {f"profiles.{name}": (block or {}).get("parameters") or {}
               for name, block in data.get("profiles", {}).items()}
    for where, parameters in blocks.items():
        for name, value in parameters.items():
            if name in defaults and defaults[name] == value:
                repeated.append(f"{where}.{name}: {value!r}")
    assert not repeated, f"{path.name} repeats the notebook's defaults: {repeated}"


def test_the_checks_read_real_files():
    """The rules above ran over something: every notebook has a parameters cell with model settings or
    data sizes, and every params file names its notebook."""
    assert len(NOTEBOOKS) >= 6 and len(PARAM_FILES) == len(NOTEBOOKS)
    for path in NOTEBOOKS:
        assert "epochs" in _parameter_lines(path) or "r2_epochs" in _parameter_lines(path), path.name
    assert all(ast.literal_eval(repr(yaml.safe_load(p.read_text())["notebook"])) for p in PARAM_FILES)


PRESETS = ("R1", "R2", "R3", "R4", "R5")


@pytest.mark.parametrize("profile", ["quick", "default", "full"])
def test_the_repositorys_params_plan_every_profile_and_preset(profile):
    """params/*.yaml as shipped: loaded, checked and planned for each profile; each preset's runs keep
    their report's protocol (seeds from profiles.yaml), and the exploratory blocks carry no protocol."""
    from lenet_lib.running.params import load_params, load_profiles, select
    from lenet_lib.running.runner import plan
    params, profiles = load_params(REPO / "params", REPO / "notebooks"), load_profiles(REPO / "params")
    tasks = plan(select(params, None, profile, None), Path("/tmp/unused"), profile, profiles)
    presets = {t.preset for t in tasks if t.preset}
    assert presets == set(PRESETS)
    seeds = profiles[profile].protocol_parameters["seeds"]
    for preset in PRESETS:
        first = next(t for t in tasks if t.preset == preset)
        if "seeds" in first.parameters:
            assert first.parameters["seeds"] == seeds, (preset, first.notebook)
        assert first.profile == profile
    r1 = next(t for t in tasks if t.preset == "R1").parameters
    assert (r1["optimizer"], r1["lr"], r1["momentum"], r1["batch_size"]) == ("momentum", 0.05, 0.9, 128)
    assert r1["epochs"] == (1 if profile == "quick" else 25)
    assert len({t.run_dir for t in tasks}) == len(tasks)           # one folder per run


@pytest.mark.parametrize("notebook", ["bn_dropout_grid", "dropout_sweep"])
@pytest.mark.parametrize("name, bad, valid", [
    ("normalize", "zscore", "'standard', 'center', 'unit', 'raw'"),
    ("padding", "full", "'auto', 'same', 'valid'"),
    ("input_size", 30, "28, 32"),
    ("resize", "crop", "'pad', 'interpolate'"),
])
def test_the_grid_notebooks_input_and_geometry_parameters_are_checked_up_front(notebook, name, bad, valid):
    """The presets' readings set these (R1's valid convolutions, R4's 32x32 inputs and input scale): each is
    a parameter of the notebook, its default passes the checks, and a bad value is refused naming the valid."""
    from lenet_lib.base.validate import check_parameters
    defaults = notebook_defaults(REPO / "notebooks" / f"{notebook}.ipynb")
    assert name in defaults
    check_parameters({name: defaults[name]})
    with pytest.raises(ValueError, match=f"{name}={bad!r}.*{valid}".replace("(", r"\(")):
        check_parameters({name: bad})
