"""The fast path's private-API tricks, each behind a switch of its own (README.md's table).

All are on in training. `make bench` turns one off at a time (bench/tricks.py) to measure what it buys on
a whole default report; off, the trick's public fallback runs, the same numbers.
"""
from __future__ import annotations

import contextlib

ON = {
    "lean_steps": True,      # optim.py: fused optimizer kernels called without torch.optim's step()
    "one_node": True,        # one_node.py: a fused network's training pass as one autograd node
    "engine_free": True,     # one_node.py: loss and backward of that node without the autograd engine
}


@contextlib.contextmanager
def off(*names: str):
    """The named tricks switched off inside the block (their public fallbacks run), then as they were."""
    unknown = sorted(set(names) - set(ON))
    if unknown:
        raise ValueError(f"unknown fast-path trick(s) {unknown}; valid: {sorted(ON)}")
    before = dict(ON)
    ON.update(dict.fromkeys(names, False))
    try:
        yield
    finally:
        ON.update(before)
