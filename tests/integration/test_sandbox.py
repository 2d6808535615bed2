"""`ywtb sandbox` serves within 30 s and leaves no process behind, however it is stopped."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gateway.devbroker import free_port


def _start(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "sandbox", "--port", str(port)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _wait_ready(process: subprocess.Popen[str], port: int) -> str:
    """Banner lines printed until the API answers /healthz (at most 30 s)."""
    assert process.stdout is not None
    banner = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        banner.append(line)
        if "Ctrl-C" in line:
            break
        assert process.poll() is None, "".join(banner)
    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert time.monotonic() < deadline
    return "".join(banner)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _gone(port: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _listening(port):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGKILL])
def test_sandbox_serves_and_leaves_nothing_behind(tmp_path: Path, stop_signal: int) -> None:
    port = free_port()
    process = _start(tmp_path, port)
    try:
        banner = _wait_ready(process, port)
        assert f"http://127.0.0.1:{port}" in banner
        assert "Authorization: Bearer sandbox-key" in banner
        broker_port = int(re.search(r"Kafka\s+127\.0\.0\.1:(\d+)", banner)[1])  # type: ignore[index]
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["broker"]["ok"] is True

        process.send_signal(stop_signal)
        code = process.wait(timeout=30)
    finally:
        process.kill()
        if process.stdout:
            process.stdout.close()
    assert code == (0 if stop_signal == signal.SIGINT else -signal.SIGKILL)
    assert _gone(port), "the API still listens"
    assert _gone(broker_port), "the development broker outlived the sandbox"
