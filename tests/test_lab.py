"""`make lab`: a real JupyterLab server on the notebooks, and a notebook executed through it with the
environment's kernel (the server's REST API starts the kernel; its websocket carries the cells)."""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """`jupyter lab` as `make lab` starts it (notebook dir notebooks/), headless, on a free port."""
    port, token = free_port(), uuid.uuid4().hex
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--notebook-dir={REPO / 'notebooks'}",
                             *(["--allow-root"] if os.geteuid() == 0 else [])],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "w"),
                            env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError("jupyter lab did not start: " + (tmp_path / "lab.log").read_text()[-2000:])
            time.sleep(0.5)
    yield base, token
    proc.terminate()
    proc.wait(30)


def rest(base, token, path, body=None, method=None):
    request = urllib.request.Request(f"{base}{path}?token={token}", method=method or ("POST" if body else "GET"),
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
        return json.loads(text) if text else None


async def run_cells(base, token, kernel_id, sources, timeout=240):
    """Execute each source on the kernel over its websocket; the output messages of each cell."""
    from tornado.websocket import websocket_connect
    url = base.replace("http", "ws") + f"/api/kernels/{kernel_id}/channels?token={token}"
    ws = await websocket_connect(url)
    session, replies = uuid.uuid4().hex, []
    for source in sources:
        msg_id = uuid.uuid4().hex
        await ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": session,
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": source, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        # The reply (shell channel) can come before the cell's last output (iopub): a cell is done when
        # both its reply and iopub's "idle" for it have come, which follows all its outputs.
        outputs, status, idle = [], None, False
        while status is None or not idle:
            message = json.loads(await asyncio.wait_for(ws.read_message(), timeout))
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if kind in ("stream", "execute_result", "display_data", "error"):
                outputs.append(message["content"])
            elif kind == "execute_reply":
                status = message["content"]["status"]
            elif kind == "status":
                idle = message["content"]["execution_state"] == "idle"
        replies.append((status, outputs))
        if status != "ok":
            break
    ws.close()
    return replies


def test_a_notebook_runs_through_jupyterlab_with_the_lenet_kernel(lab):
    base, token = lab
    assert any(item["name"] == "bn_dropout_grid.ipynb" for item in rest(base, token, "/api/contents")["content"])
    spec = rest(base, token, "/api/kernelspecs")["kernelspecs"]["python3"]["spec"]
    assert spec["display_name"] == "Python 3 (lenet)" or Path(spec["argv"][0]).name.startswith("python")
    kernel = rest(base, token, "/api/kernels", {"name": "python3"})
    try:
        nb = nbformat.read(str(REPO / "notebooks" / "bn_dropout_grid.ipynb"), as_version=4)
        sources = [c.source for c in nb.cells if c.cell_type == "code"]
        # the parameters cell as a user edits it in JupyterLab: fewer images, then run all
        sources[0] += "\ntrain_size, val_size, test_size, timing_rounds = 400, 100, 200, 2"
        sources.append("import sys, lenet_lib; print(sys.executable, lenet_lib.__file__, len(history))")
        replies = asyncio.run(run_cells(base, token, kernel["id"], sources))
    finally:
        rest(base, token, f"/api/kernels/{kernel['id']}", method="DELETE")
    failed = [(i, outputs) for i, (status, outputs) in enumerate(replies) if status != "ok"]
    assert not failed and len(replies) == len(sources), failed
    last = "".join(o.get("text", "") for o in replies[-1][1])
    executable, library, rows = last.split()
    assert Path(executable).parent == Path(sys.executable).parent          # the environment's own python
    assert Path(library).resolve().is_relative_to(REPO) and int(rows) == 4 * 2 * 2     # 4 variants x 2 seeds x 2 epochs
    answer = "".join(json.dumps(o.get("data", {})) for _, outputs in replies for o in outputs)   # its computed answer
    assert "**Answer.**" in answer and "the slowest step is" in answer and "2 rounds" in answer
