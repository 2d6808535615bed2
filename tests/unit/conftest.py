"""Unit tests open no sockets: connecting fails the test unless it is marked ``network``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _no_network(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if request.node.get_closest_marker("network") is None:

        def refuse(self: socket.socket, address: Any) -> None:
            raise RuntimeError(f"unit tests open no sockets (tried {address!r}); mark it 'network'")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield
