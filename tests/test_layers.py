"""The package's layers (CONTRIBUTING.md): imports run one way, down; no cycles; the layers that read
results back never load torch."""
import ast
import subprocess
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "lenet_lib"

# subpackage: the subpackages its modules may import (its own included); the picture in CONTRIBUTING.md
MAY_IMPORT = {
    "base": {"base"},
    "fast": {"base", "fast"},
    "core": {"base", "fast", "core"},
    "numpy_ref": {"base", "core", "numpy_ref"},
    "analysis": {"base", "analysis"},
    "experiments": {"base", "core", "analysis", "experiments"},
    "summary": {"base", "analysis", "summary"},
    "running": {"base", "analysis", "summary", "running"},     # summary: decide judges claims after a stage
    "bench": {"base", "fast", "core", "analysis", "bench"},
}
TORCH_FREE = ["lenet_lib.base.choices", "lenet_lib.base.validate", "lenet_lib.base.datafiles",
              "lenet_lib.base.progress", "lenet_lib.base.files", "lenet_lib.analysis.results",
              "lenet_lib.analysis.tidy", "lenet_lib.analysis.stats", "lenet_lib.analysis.plots",
              "lenet_lib.analysis.sweeps", "lenet_lib.analysis.time_ratios", "lenet_lib.summary.sequential",
              "lenet_lib.summary.verdicts", "lenet_lib.summary.staged", "lenet_lib.running.decide",
              "lenet_lib.summary.scorecard", "lenet_lib.summary.report", "lenet_lib.running.cli",
              "lenet_lib.numpy_ref", "lenet_lib.base.kernel_path", "lenet_lib.running.runner"]


def module_name(path: Path) -> str:
    parts = path.relative_to(LIBRARY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in LIBRARY.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """lenet_lib modules imported anywhere in the file (functions included), as module names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lenet_lib")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import 'from {'.' * node.level}{node.module or ''}'; "
                                 "use lenet_lib.<layer>.<module>")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lenet_lib"):
            for alias in node.names:      # `from lenet_lib.core import train` imports the module core.train
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in MAY_IMPORT else None


def test_every_module_sits_in_a_layer():
    loose = [m for m in MODULES if layer_of(m) is None and m not in ("lenet_lib", "lenet_lib.__main__")]
    assert not loose, f"modules outside the layers: {loose}"


def test_imports_run_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        layer = layer_of(module)
        for target in imports_of(path):
            if layer and layer_of(target) and layer_of(target) not in MAY_IMPORT[layer]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the layers (CONTRIBUTING.md):\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    graph = {m: {t for t in imports_of(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_reading_results_back_loads_no_torch():
    """The summary, the report's tables and the runner read results and plan runs without torch."""
    code = "import sys\n" + "".join(f"import {m}\n" for m in TORCH_FREE) + \
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout[:500]


def test_the_checker_sees_a_wrong_import(tmp_path, monkeypatch):
    """The rule itself: an analysis module importing core would be caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lenet_lib.core.train import train\n")
    assert imports_of(bad) == {"lenet_lib.core.train"}
    assert layer_of("lenet_lib.core.train") not in MAY_IMPORT["analysis"]


# the one place outside fast/ and bench/ that imports lenet_lib.fast: train.py applies it (lazily, in _fast)
APPLIES_FAST = "lenet_lib.core.train"


def fast_imports(path: Path) -> list[tuple[int, bool]]:
    """(line, at module level) of every import of lenet_lib.fast or its modules in the file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and node.module
                 else [])
        if any(n == "lenet_lib.fast" or n.startswith("lenet_lib.fast.") for n in names):
            found.append((node.lineno, id(node) in top))
    return found


def test_only_train_applies_the_fast_path():
    """core, numpy_ref, analysis, experiments, summary and running import nothing from lenet_lib.fast but
    train.py's one lazy import (issue 36): switching the fast path off leaves it unloaded."""
    wrong = []
    for module, path in MODULES.items():
        if layer_of(module) in ("fast", "bench"):
            continue
        for line, top_level in fast_imports(path):
            if module != APPLIES_FAST or top_level:
                wrong.append(f"{module}:{line}")
    assert not wrong, "imports of lenet_lib.fast outside core/train.py's _fast:\n" + "\n".join(wrong)
    assert [top for _, top in fast_imports(MODULES[APPLIES_FAST])] == [False]


def test_the_fast_import_checker_sees_each_form(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import lenet_lib.fast.conv\nfrom lenet_lib import fast\n"
                   "def f():\n    from lenet_lib.fast.layers import accelerate\n")
    assert fast_imports(bad) == [(1, True), (2, True), (4, False)]
