"""Progress of a run, for the runner's bar: the kernel writes how many model-epochs it planned and did.

Under the runner, $LENET_PROGRESS names a file in the run's staging folder; experiments.runs.run_specs
updates it after every epoch (atomically, a few bytes), and the runner reads every running run's file.
Outside the runner nothing is written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

ENV = "LENET_PROGRESS"
FILE = "progress.json"


class Recorder:
    """Counts model-epochs planned and done in this kernel, across all its training calls."""

    def __init__(self):
        self.path = os.environ.get(ENV)
        self.planned = self.done = 0
        self.current = ""

    def plan(self, model_epochs: int) -> None:
        self.planned += model_epochs
        self._write()

    def epoch_done(self, model_id: str, epoch: int, epochs: int) -> None:
        self.done += 1
        self.current = f"{model_id} epoch {epoch}/{epochs}"
        self._write()

    def _write(self) -> None:
        if not self.path:
            return
        tmp = f"{self.path}.tmp"
        Path(tmp).write_text(json.dumps({"planned": self.planned, "done": self.done, "current": self.current}))
        os.replace(tmp, self.path)


RECORDER = Recorder()       # one per kernel process


def read(path: str | Path) -> dict | None:
    """A run's progress ({"planned", "done", "current"}), or None before it wrote any."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class ReportBar:
    """The runner's bar: model-epochs done across every run of a report, with an ETA, and a second line
    naming what the running runs are training now. Refreshed from the runs' progress files by a thread.

    A run that has not started yet counts as the mean work of the started runs of its notebook (of all
    runs, if none of its notebook has started): the total, and so the ETA, firm up as runs start.
    """

    def __init__(self, tasks, cached: set, out, interval: float | None = None):
        import threading
        from tqdm import tqdm
        tqdm.set_lock(threading.RLock())    # not tqdm's multiprocessing lock: it leaves a semaphore behind
        self.tasks, self.cached, self.finished = list(tasks), set(cached), set()
        self.bar = tqdm(total=0, unit="model-epoch", desc="report", file=out, dynamic_ncols=True)
        self.line = tqdm(total=0, bar_format="{desc}", position=1, file=out, leave=False)
        # a terminal is redrawn twice a second; a log file or pipe gets a line every 10 s
        interval = interval or (0.5 if getattr(out, "isatty", lambda: False)() else 10.0)
        self._stop, self._interval = threading.Event(), interval
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.refresh()
        self._thread.start()

    def _read(self, task) -> dict | None:
        done_dir = Path(task.run_dir)
        if task.run_id in self.cached or task.run_id in self.finished:
            return read(done_dir / FILE) or {"planned": 0, "done": 0, "current": ""}
        return read(task.staging_dir / FILE)

    def refresh(self) -> None:
        states = {t.run_id: self._read(t) for t in self.tasks}
        known = [s["planned"] for s in states.values() if s and s["planned"]]
        by_notebook = {}
        for t in self.tasks:
            s = states[t.run_id]
            if s and s["planned"]:
                by_notebook.setdefault(t.notebook, []).append(s["planned"])
        fallback = sum(known) / len(known) if known else 0
        total = done = 0
        for t in self.tasks:
            s = states[t.run_id]
            if s and s["planned"]:
                total += max(s["planned"], s["done"])
                done += s["done"]
            else:
                mine = by_notebook.get(t.notebook)
                total += sum(mine) / len(mine) if mine else fallback
        running = [f"{t.label}: {states[t.run_id]['current']}" for t in self.tasks
                   if t.run_id not in self.cached and t.run_id not in self.finished
                   and states[t.run_id] and states[t.run_id]["current"]]
        with self.bar.get_lock():
            self.bar.total = max(int(round(total)), done)
            self.bar.n = done
            self.bar.set_postfix_str(f"runs {len(self.cached) + len(self.finished)}/{len(self.tasks)}",
                                     refresh=False)
            self.bar.refresh()
            self.line.set_description_str("  now: " + ("; ".join(running) if running else "starting"))

    def run_finished(self, task) -> None:
        self.finished.add(task.run_id)
        self.refresh()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.refresh()
        self.line.close()
        self.bar.close()
