"""`ywtb sandbox` serves within 30 s and leaves no process behind, however it is stopped."""

from __future__ import annotations

import asyncio
import json
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

from gateway.bus import record_to_event
from gateway.devbroker import free_port
from schemas.events import PERMIT_EVENTS, PermitEvent
from tests.kafka import read_topic


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


def _url_of(banner: str, name: str) -> str:
    match = re.search(rf"simulator\s+{name}\s+(http://\S+)", banner)
    assert match, banner
    return match[1]


def test_a_permit_is_filed_decided_called_back_and_relayed_with_no_call_in_between(
    tmp_path: Path,
) -> None:
    from tests.integration.test_applications import body
    from tests.integration.test_async_flows import WORKS

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YWTB_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "sandbox", "--port", str(port)],
        cwd=tmp_path,
        env={
            **env,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "YWTB_SANDBOX_PERMIT_DECISION_DELAY_S": "1",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = _wait_ready(process, port)
        api = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": "Bearer sandbox-key"},
            timeout=30,
        )
        application = api.post("/api/v1/applications", json=body()).json()
        assert application["status"] == "ready"
        assert "外部工程实施" in [p["name"] for p in application["procedures"]]
        permit = api.post(f"/api/v1/applications/{application['id']}/permits", json=WORKS)
        assert permit.status_code == 201, permit.text
        permit_id = permit.json()["id"]

        # From here on, only looking: the sandbox files, the authority decides and calls back.
        deadline = time.monotonic() + 60
        notices: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            current = api.get(f"/api/v1/permits/{permit_id}").json()
            notices = httpx.get(f"{_url_of(banner, 'marketing')}/_admin/notices").json()["notices"]
            if current["status"] == "approved" and notices:
                break
            time.sleep(0.2)
        assert current["status"] == "approved", current
        assert current["filing_no"] and current["permit_no"]
        assert current["valid_from"] == "2026-12-10" and current["valid_to"] == "2026-12-20"
        assert [(n["TZLX"], n["SQBH"]) for n in notices] == [("permit_decision", application["id"])]
        assert json.loads(notices[0]["NR"])["permit_no"] == current["permit_no"]

        timeline: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            timeline = api.get(f"/api/v1/applications/{application['id']}/events").json()
            if any(str(e["type"]).endswith("permit.decided") for e in timeline):
                break
            time.sleep(0.2)
        types = [str(e["type"]).rsplit(".", 2)[-2:] for e in timeline]
        assert types == [
            ["application", "received"],
            ["application", "evidence_fetched"],
            ["application", "evidence_fetched"],
            ["application", "dossier_completed"],
            ["permit", "requested"],
            ["permit", "filed"],
            ["permit", "decided"],
        ]
        broker = re.search(r"Kafka\s+(\S+)", banner)[1]  # type: ignore[index]
        on_topic = asyncio.run(read_topic(broker, PERMIT_EVENTS, expect=3))
        decisions = [record_to_event(r) for r in on_topic]
        assert [e.get_type() for e in decisions][-1] == PermitEvent.DECIDED
        assert decisions[-1].get_data()["permit_no"] == current["permit_no"]  # type: ignore[index]
        decided = timeline[-1]
        assert decided["deliveries"] == [  # the decision reached the marketing system
            {**decided["deliveries"][0], "worker": "marketing", "status": "delivered"}  # type: ignore[index,dict-item]
        ]
        api.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        if process.stdout:
            process.stdout.close()
