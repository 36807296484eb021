"""Progress of a run, for the runner's bar: the kernel writes how many model-epochs, and how many training
images, it planned and did.

Under the runner, $LENET_PROGRESS names a file in the run's staging folder; experiments.runs.run_specs
updates it after every epoch (atomically, a few bytes), and the runner reads every running run's file.
Outside the runner nothing is written.

The bar's ETA counts training images, not model-epochs: a preset's model-epoch (60,000 images) costs ten to
thirty times an exploration's, so a rate in model-epochs swings as the mix of runs changes. Each run's fixed
cost (kernel start, data, plots: seconds that train nothing) is counted too, as the images those seconds
would train: the quick profile's runs are mostly fixed cost (how far off each ETA was: docs/speed.md).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from lenet_lib.base.datafiles import TRAIN_IMAGES

ENV = "LENET_PROGRESS"
FILE = "progress.json"


class Recorder:
    """Counts model-epochs and training images planned and done in this kernel, across its training calls."""

    def __init__(self):
        self.path = os.environ.get(ENV)
        self.planned = self.done = self.planned_images = self.done_images = 0
        self.images_per_epoch = 0
        self.current = ""
        self.first_plan = self.last_epoch = None   # time.monotonic(): the span of this kernel's training

    def plan(self, model_epochs: int, images_per_epoch: int) -> None:
        """model_epochs more to train, each on images_per_epoch training images (until the next plan)."""
        if self.first_plan is None:
            self.first_plan = time.monotonic()
        self.planned += model_epochs
        self.planned_images += model_epochs * images_per_epoch
        self.images_per_epoch = images_per_epoch
        self._write()

    def epoch_done(self, model_id: str, epoch: int, epochs: int) -> None:
        self.done += 1
        self.done_images += self.images_per_epoch
        self.current = f"{model_id} epoch {epoch}/{epochs}"
        self.last_epoch = time.monotonic()
        self._write()

    def _write(self) -> None:
        if not self.path:
            return
        tmp = f"{self.path}.tmp"
        train_seconds = self.last_epoch - self.first_plan if self.last_epoch is not None else 0.0
        Path(tmp).write_text(json.dumps({"planned": self.planned, "done": self.done, "current": self.current,
                                         "planned_images": self.planned_images, "done_images": self.done_images,
                                         "train_seconds": round(train_seconds, 3)}))
        os.replace(tmp, self.path)


RECORDER = Recorder()       # one per kernel process
# a run's fixed seconds until one has finished: papermill, a kernel and `import torch` (docs/speed.md)
PRIOR_FIXED_SECONDS = 8.0


def read(path: str | Path) -> dict | None:
    """A run's progress ({"planned", "done", "current"}), or None before it wrote any."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def parameter_images(parameters: dict) -> float:
    """A run's training images from its parameters (the notebook's defaults included) alone: seeds x epochs
    x training-set size (seeds x iterations x batch size where a run trains by iterations). The models per seed (variants, optimizers, batch sizes) are the notebook's own, so
    ReportBar scales this by what the notebook's started runs planned."""
    if parameters.get("train") is False:       # a timing-only run trains nothing
        return 0.0
    seeds = parameters.get("seeds", [parameters.get("seed", 0)])
    dataset = parameters.get("dataset", "mnist")
    full = TRAIN_IMAGES.get(dataset, TRAIN_IMAGES["mnist"]) - (parameters.get("val_size") or 0)
    size = min(parameters.get("train_size") or full, full)
    runs = max(len(seeds) if isinstance(seeds, (list, tuple)) else 1, 1)
    if parameters.get("iterations"):    # training by iterations: one batch each, whatever the set's size
        return runs * parameters["iterations"] * parameters.get("batch_size", 64)
    return runs * parameters.get("epochs", 1) * size


class ReportBar:
    """The runner's bar: training images done across every run of a report, with an ETA; model-epochs and
    runs done beside it, and a second line naming what the running runs train now. Refreshed from the runs'
    progress files by a thread. Cached runs are left out: they cost nothing and would inflate the rate.

    A run that has not started yet is estimated from its parameters (task.work, from parameter_images),
    scaled by the images per parameter-image that its notebook's started runs planned (all started runs'
    when none of its notebook has): the total, and so the ETA, firm up as runs start. Every run also counts
    its fixed seconds (fixed_images), done when it finishes.
    """

    def __init__(self, tasks, cached: set, out, interval: float | None = None):
        import threading
        from tqdm import tqdm
        tqdm.set_lock(threading.RLock())    # not tqdm's multiprocessing lock: it leaves a semaphore behind
        self.tasks, self.cached, self.finished = list(tasks), set(cached), set()
        self.walls = {}   # run_id: a finished run's wall seconds (its manifest's)
        self.bar = tqdm(total=0, unit="img", unit_scale=True, desc="report", file=out, dynamic_ncols=True)
        self.line = tqdm(total=0, bar_format="{desc}", position=1, file=out, leave=False)
        # a terminal is redrawn twice a second; a log file or pipe gets a line every 10 s
        interval = interval or (0.5 if getattr(out, "isatty", lambda: False)() else 10.0)
        self._stop, self._interval = threading.Event(), interval
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.refresh()
        self._thread.start()

    def _read(self, task) -> dict | None:
        if task.run_id in self.finished:
            return read(Path(task.run_dir) / FILE) or {"planned": 0, "done": 0, "current": ""}
        return read(task.staging_dir / FILE)

    def fixed_images(self, states: dict) -> float:
        """A run's fixed cost in training images: the median of finished runs' wall seconds outside training
        (PRIOR_FIXED_SECONDS before one finishes) at the runs' training rate so far (0 before any rate)."""
        timed = [s for s in states.values() if s and s.get("train_seconds", 0) > 0]
        if not timed:
            return 0.0
        rate = sum(s["done_images"] for s in timed) / sum(s["train_seconds"] for s in timed)
        outside = [max(self.walls[r] - states[r].get("train_seconds", 0), 0.0) for r in self.walls
                   if r in states and states[r]]
        return (statistics.median(outside) if outside else PRIOR_FIXED_SECONDS) * rate

    def totals(self, states: dict) -> dict:
        """Images planned (started runs as they said, the others estimated) and done, and model-epochs done,
        over the runs this report executes; states: {run_id: progress or None} of those runs."""
        todo = [t for t in self.tasks if t.run_id not in self.cached]
        started = {t.run_id for t in todo if states[t.run_id] and states[t.run_id].get("planned_images")}
        scale = {}
        for t in todo:
            if t.run_id in started:
                scale.setdefault(t.notebook, []).append(states[t.run_id]["planned_images"] / max(t.work, 1.0))
        everyone = [x for xs in scale.values() for x in xs]
        fallback = sum(everyone) / len(everyone) if everyone else 0.0
        fixed = self.fixed_images(states)
        total = done = 0.0
        model_epochs = 0
        for t in todo:
            s = states[t.run_id] or {}
            model_epochs += s.get("done", 0)
            total += fixed
            done += fixed if t.run_id in self.finished else 0.0
            if t.run_id in started:
                total += max(s["planned_images"], s["done_images"])
                done += s["done_images"]
            else:
                mine = scale.get(t.notebook)
                total += t.work * (sum(mine) / len(mine) if mine else fallback)
        return {"images": total, "images_done": done, "model_epochs_done": model_epochs}

    def refresh(self) -> None:
        states = {t.run_id: self._read(t) for t in self.tasks if t.run_id not in self.cached}
        counts = self.totals(states)
        running = [f"{t.label}: {states[t.run_id]['current']}" for t in self.tasks
                   if t.run_id in states and t.run_id not in self.finished
                   and states[t.run_id] and states[t.run_id].get("current")]
        with self.bar.get_lock():
            self.bar.total = max(int(round(counts["images"])), int(counts["images_done"]))
            self.bar.n = int(counts["images_done"])
            self.bar.set_postfix_str(f"{counts['model_epochs_done']} model-epochs, runs "
                                     f"{len(self.cached) + len(self.finished)}/{len(self.tasks)}", refresh=False)
            self.bar.refresh()
            self.line.set_description_str("  now: " + ("; ".join(running) if running else "starting"))

    def run_finished(self, task, seconds: float | None = None) -> None:
        """task is done; seconds: its wall time (its manifest's), for the runs' fixed cost."""
        self.finished.add(task.run_id)
        if seconds:
            self.walls[task.run_id] = float(seconds)
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
