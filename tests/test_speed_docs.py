"""Speed figures live in docs/speed.md, not in the code they were measured on (issue 36)."""
from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# where figures were moved from; the code keeps one line of why
MOVED_FROM = ["lenet_lib/core/ensemble.py", "lenet_lib/core/batched.py", "lenet_lib/core/train.py",
              "lenet_lib/core/data.py", "lenet_lib/running/runner.py", "lenet_lib/base/progress.py", "Makefile"]
# a measured figure: "2.8x", "58 -> 21 us", "65 ms", "12.9k model-images/s", "+8 %", "9:29", "1790 -> 1694"
FIGURE = re.compile(r"\d(\.\d+)?x\b|\d ?(us|µs|ms)\b|images/s|\d ?%|\b\d+:\d\d\b|\d -> \d")


def prose(path: Path) -> list[str]:
    """A Python file's comments and docstrings; a Makefile's comment lines."""
    text = path.read_text()
    if path.suffix != ".py":
        return [line for line in text.splitlines() if line.lstrip().startswith("#")]
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    comments = [t.string for t in tokens if t.type == tokenize.COMMENT]
    nodes = [n for n in ast.walk(ast.parse(text))
             if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    return comments + [doc for n in nodes if (doc := ast.get_docstring(n))]


def test_docs_speed_md_holds_the_figures_and_readme_points_to_it():
    speed = (REPO / "docs" / "speed.md").read_text()
    assert "## Runner, training and reports" in speed and "1790 -> 1694 s" in speed
    assert "(docs/speed.md)" in (REPO / "README.md").read_text()
    assert "docs/speed.md" in (REPO / "Makefile").read_text()      # make bench says where they are


@pytest.mark.parametrize("name", MOVED_FROM)
def test_no_measured_figures_in_comments_or_docstrings(name):
    found = [m.group(0) for text in prose(REPO / name) for m in FIGURE.finditer(text)]
    assert found == [], f"{name}: move these figures to docs/speed.md: {found}"
