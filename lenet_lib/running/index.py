"""index.json: one entry per planned run (its status, error, seconds, reading), the selected presets'
readings for the summary, and the one line a report (or decide) prints at the end."""
from __future__ import annotations

import json
from pathlib import Path

from lenet_lib.base import files
from lenet_lib.analysis import results
from lenet_lib.running.executors import RunTask, describe_error


def _reading_of(task: RunTask) -> dict:
    """A run's preset, reading, whether it is primary, and the protocol label its rows carry."""
    return {"preset": task.preset, "reading": task.reading, "primary": task.primary,
            "protocol": results.protocol_label(task.preset, task.reading, task.primary)}



def index_entries(tasks: list[RunTask], lost: dict, skipped: dict | None = None,
                  rerun: dict | None = None) -> list[dict]:
    """One entry per planned run for index.json; rerun: {run_id: why} of finished runs re-run as damaged."""
    entries = []
    for task in tasks:
        if task.run_id in (skipped or {}):
            entries.append({"notebook": task.notebook, "run_id": task.run_id, "run_dir": task.run_dir,
                            "parameters": task.parameters, **_reading_of(task), "status": "skipped",
                            "error": skipped[task.run_id], "seconds": None})
            continue
        manifest, why = results.checked_manifest(task.run_dir)
        manifest = manifest or {}
        error = manifest.get("error") or (describe_error(lost[task.label]) if task.label in lost else None)
        entries.append({"notebook": task.notebook, "run_id": task.run_id, "run_dir": task.run_dir,
                        "parameters": task.parameters, **_reading_of(task),
                        "status": "damaged" if why else manifest.get("status", "missing"),
                        "error": f"damaged: {why}" if why else error, "seconds": manifest.get("seconds")})
        if task.run_id in (rerun or {}):
            entries[-1]["rerun"] = rerun[task.run_id]
    return entries



def write_index(path: Path, index: dict) -> None:
    """Atomically; left as it is when only its time stamp would change (keeps the report cache valid)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if old is None or {**old, "created": None} != json.loads(json.dumps({**index, "created": None}, default=str)):
        files.write_json(index, path)



def protocols(selected) -> dict:
    """{preset: {notebook: {"readings": [...], "sources", "published", "reading"}}} of the selected presets,
    for the summary. Each reading: name, protocol (the label its runs carry), primary, summary, parameters,
    sources, open, run_at, run; primary first. "reading" is the primary reading's summary. A reading of a
    selected preset that did not run (its run_at leaves this profile out) is listed with run: false."""
    found, ran = {}, {(nb.name, nb.blocks[label].get("preset"), nb.blocks[label].get("reading"))
                      for nb, label in selected}
    for nb, label in selected:
        block = nb.blocks[label]
        if "preset" not in block:
            continue
        name, info = block["preset"], nb.presets[block["preset"]]
        entry = found.setdefault(name, {}).setdefault(nb.name, {
            "reading": info["reading"], "readings": [], "sources": info["sources"], "published": info["published"]})
        if entry["readings"]:
            continue
        for reading_name, reading in info["readings"].items():
            entry["readings"].append({"name": reading_name,
                                      "protocol": results.protocol_label(name, reading_name, reading["primary"]),
                                      "primary": reading["primary"], "summary": reading["summary"],
                                      "parameters": reading["parameters"], "sources": reading["sources"],
                                      "open": reading["open"], "run_at": reading["run_at"],
                                      "run": (nb.name, name, reading_name) in ran})
    return found



def summary_line(entries: list[dict], cached: set) -> str:
    counts = {s: [e for e in entries if e["status"] == s] for s in ("ok", "diverged", "failed", "missing",
                                                                     "skipped", "damaged")}
    n_cached = sum(1 for e in counts["ok"] if e["run_id"] in cached)
    parts = [f"{len(counts['ok'])} ok ({n_cached} cached)"]
    if counts["diverged"]:
        parts.append(f"{len(counts['diverged'])} diverged")
    if counts["skipped"]:
        reasons = sorted({e["error"] for e in counts["skipped"]})
        parts.append(f"{len(counts['skipped'])} skipped ({'; '.join(reasons)})")
    rerun = [e for e in entries if e.get("rerun")]
    if rerun:
        listed = ", ".join(f"{e['notebook']}/{e['run_id']} ({_short(e['rerun'])})" for e in rerun)
        parts.append(f"{len(rerun)} re-run as damaged: {listed}")
    for status, word in (("failed", "failed"), ("missing", "not finished"), ("damaged", "damaged")):
        if counts[status]:
            listed = ", ".join(f"{e['notebook']}/{e['run_id']} ({_short(e['error'])})" for e in counts[status])
            parts.append(f"{len(counts[status])} {word}: {listed}")
    return f"report: {len(entries)} run{'' if len(entries) == 1 else 's'}: " + ", ".join(parts)



def _short(error, limit=160) -> str:
    lines = (error or "").strip().splitlines()
    first = lines[0] if lines else "no manifest"
    return first if len(first) <= limit else first[:limit - 3] + "..."

