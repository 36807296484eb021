"""Tidy results (one row per model x epoch), run manifests, and reading them back."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from lenet_lib.base.files import atomic_write

IDENTITY = ("notebook", "run_id", "model_id", "seed", "epoch")
MEASURES = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "epoch_seconds")
ACCURACIES = ("train_acc", "val_acc", "test_acc")
STATUSES = ("ok", "diverged")
RUN_STATUSES = ("ok", "failed", "diverged")
RESULTS_FILE = "results.parquet"
MANIFEST_FILE = "manifest.json"


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Parquet or CSV by extension, atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    if path.suffix == ".csv":
        return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    raise ValueError(f"table path {str(path)!r} is not valid; use a .parquet or .csv file")


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def check_tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Raise ValueError if df breaks the tidy contract (../shared/DESIGN.md); return it unchanged."""
    missing = [c for c in (*IDENTITY, *MEASURES, "status") if c not in df.columns]
    if missing:
        raise ValueError(f"tidy results lack column(s) {missing}")
    if (df["epoch"] < 1).any():
        raise ValueError("epochs are 1-based")
    if df.duplicated(["run_id", "model_id", "epoch"]).any():
        raise ValueError("tidy results repeat a (run_id, model_id, epoch) row")
    for col in ACCURACIES:
        bad = df[col].dropna()
        if ((bad < 0) | (bad > 1)).any():
            raise ValueError(f"{col} must be a fraction in [0, 1]")
    bad_status = set(df["status"]) - set(STATUSES)
    if bad_status:
        raise ValueError(f"status {sorted(bad_status)} not valid; expected one of {list(STATUSES)}")
    return df


def tag(df: pd.DataFrame, notebook: str, run_id: str) -> pd.DataFrame:
    """Identity columns first: notebook and run_id on every row."""
    df = df.assign(notebook=notebook, run_id=run_id)
    first = [c for c in IDENTITY if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def save_results(df: pd.DataFrame, output_dir: str | Path | None, notebook: str, run_id: str) -> pd.DataFrame:
    """Tag, check and (when output_dir is given, i.e. under the runner) write results.parquet atomically."""
    df = check_tidy(tag(df, notebook, run_id))
    if output_dir is not None:
        write_table(df, Path(output_dir) / RESULTS_FILE)
    return df


def save_table(df: pd.DataFrame, output_dir: str | Path | None, name: str, notebook: str, run_id: str) -> pd.DataFrame:
    """A table beside the tidy results (e.g. "timing": one row per variant x timing round), tagged with
    notebook and run_id and written atomically as <name>.parquet when output_dir is given."""
    if not (isinstance(name, str) and name.isidentifier() and name != RESULTS_FILE.split(".")[0]):
        raise ValueError(f"table name {name!r} is not valid; expected an identifier other than 'results'")
    df = tag(df, notebook, run_id)
    if output_dir is not None:
        write_table(df, Path(output_dir) / f"{name}.parquet")
    return df


def git_commit(cwd: str | Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict:
    """Where and with what a run was made."""
    import torch
    import torchvision
    from lenet_lib import __version__
    cuda = torch.cuda.is_available()
    return {"lenet_lib": __version__, "git_commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
            "cpu_count": os.cpu_count(), "gpu_count": torch.cuda.device_count() if cuda else 0,
            "host": platform.node()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_manifest(parameters: dict, status: str, started: str, finished: str, seconds: float,
                  profile: str | None = None, preset: str | None = None, error: str | None = None,
                  reading: str | None = None, primary: bool | None = None, **extra) -> dict:
    """A run's manifest; a preset run records its preset, the reading it ran and whether that is primary."""
    if status not in RUN_STATUSES:
        raise ValueError(f"status={status!r} is not valid; expected one of {list(RUN_STATUSES)}")
    manifest = {"parameters": parameters, "profile": profile, "preset": preset, "reading": reading,
                "primary": primary, "status": status,
                "started": started, "finished": finished, "seconds": round(seconds, 3),
                "provenance": provenance(), **extra}
    if error is not None:
        manifest["error"] = error
    return manifest


def read_manifest(run_dir: str | Path) -> dict | None:
    """The run's manifest, or None when the run is not done (no manifest yet)."""
    path = Path(run_dir) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.exists() else None


@functools.lru_cache(maxsize=4096)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256(path: str | Path) -> str:
    """The file's SHA-256 (remembered per size and modification time: the runner and the summary ask twice)."""
    stat = Path(path).stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


def file_checksums(run_dir: str | Path) -> dict:
    """{path in the run folder: {"bytes", "sha256"}} of every file a run wrote, its manifest aside: what
    the manifest vouches for."""
    run_dir = Path(run_dir)
    return {str(p.relative_to(run_dir)): {"bytes": p.stat().st_size, "sha256": sha256(p)}
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}


def damage(run_dir: str | Path, manifest: dict | None = None) -> str | None:
    """Why a finished run's files are not the ones its manifest lists (missing, resized, altered), or None
    when they all are. A run is done only when this is None."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir) if manifest is None else manifest
    listed = manifest.get("files")
    if not isinstance(listed, dict) or RESULTS_FILE not in listed and manifest.get("status") in STATUSES:
        return f"its {MANIFEST_FILE} lists no checksum of {RESULTS_FILE} (written before runs recorded them)"
    problems = []
    for name, expected in sorted(listed.items()):
        path = run_dir / name
        if not path.is_file():
            problems.append(f"{name} missing")
        elif path.stat().st_size != expected.get("bytes"):
            problems.append(f"{name} has {path.stat().st_size} bytes, the manifest says {expected.get('bytes')}")
        elif sha256(path) != expected.get("sha256"):
            problems.append(f"{name} differs from the manifest's sha256")
    return "; ".join(problems) or None


def protocol_label(preset: str | None, reading: str | None, primary: bool | None) -> str | None:
    """The protocol of a preset's run: "R2" under its primary reading (or a manifest from before
    readings), "R2:as-intended" under another; None outside a preset."""
    if preset is None:
        return None
    return preset if primary or primary is None or not reading else f"{preset}:{reading}"


def _run_columns(manifest: dict, table: pd.DataFrame) -> dict:
    """Columns every row of a run gets when read back: the protocol (the preset and reading it ran under,
    protocol_label), the reading, the profile, and the run's planned kernel path where a row does not say
    which kernels trained it."""
    columns = {"protocol": protocol_label(manifest.get("preset"), manifest.get("reading"), manifest.get("primary")),
               "reading": manifest.get("reading"), "profile": manifest.get("profile")}
    if "kernels" not in table:
        columns["kernels"] = manifest.get("kernels")
    return columns


def checked_manifest(run_dir: str | Path) -> tuple[dict | None, str | None]:
    """(manifest, None) for a run without damage; (manifest, why) for a finished run whose files are not
    the ones its manifest lists ({} when the manifest itself is unreadable); (None, None) without one."""
    try:
        manifest = read_manifest(run_dir)
    except (OSError, ValueError) as exc:
        return {}, f"{MANIFEST_FILE} unreadable ({type(exc).__name__})"
    if manifest is None or manifest.get("status") not in STATUSES:
        return manifest, None
    return manifest, damage(run_dir, manifest)


def _read_checked(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    try:
        return read_table(path), None
    except Exception as exc:        # noqa: BLE001 - pyarrow's errors have no common base but Exception
        return None, f"{path.name} unreadable ({type(exc).__name__})"


def read_runs(run_dirs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(tidy results of all finished runs, one row per run with its manifest's status and timing).

    Runs without a manifest are listed with status "missing"; failed runs keep their error. A damaged run
    (files missing or not the ones its manifest lists: checked_manifest) is listed with status "damaged"
    and why, and its rows are left out. Result rows get the run's protocol (its preset, or preset:reading
    for a reading that is not the primary one; None outside a preset), reading and profile from its manifest.
    """
    frames, runs = [], []
    for run_dir in map(Path, run_dirs):
        manifest, damaged = checked_manifest(run_dir)
        row = {"notebook": run_dir.parent.name, "run_id": run_dir.name, "run_dir": str(run_dir),
               "status": "missing", "error": None, "seconds": float("nan"), "profile": None, "preset": None,
               "reading": None, "protocol": None, "threads": None, "kernels": None}
        if manifest is not None:
            row.update({k: manifest.get(k) for k in ("status", "error", "seconds", "profile", "preset", "reading",
                                                     "threads", "kernels")})
            row["protocol"] = protocol_label(manifest.get("preset"), manifest.get("reading"), manifest.get("primary"))
            results = run_dir / RESULTS_FILE
            # a failed or damaged run's rows stay out
            if manifest.get("status") in ("ok", "diverged") and not damaged and results.exists():
                table, damaged = _read_checked(results)
                if table is not None:
                    frames.append(table.assign(**_run_columns(manifest, table)))
            if damaged:
                row.update(status="damaged", error=f"damaged: {damaged}; left out (the next report re-runs it)")
        runs.append(row)
    results = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*IDENTITY, *MEASURES])
    return results, pd.DataFrame(runs)


def read_tables(run_dirs, name: str) -> pd.DataFrame:
    """Every finished run's <name>.parquet (save_table), with the run's protocol and profile; empty if none.
    Damaged runs are left out, as in read_runs."""
    frames = []
    for run_dir in map(Path, run_dirs):
        manifest, damaged = checked_manifest(run_dir)
        path = run_dir / f"{name}.parquet"
        if manifest is not None and manifest.get("status") in ("ok", "diverged") and not damaged and path.exists():
            table, damaged = _read_checked(path)
            if table is not None:
                frames.append(table.assign(**_run_columns(manifest, table)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
