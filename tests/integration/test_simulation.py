"""The simulators' own serving: what every platform simulator stands on."""

from __future__ import annotations

import socket

import httpx
from fastapi import FastAPI

from adapters.simulation import ServedApp


def test_a_served_app_sends_without_waiting_for_acks() -> None:
    """TCP_NODELAY on accepted connections: headers and a body written after them
    leave at once, as from a platform's front end, not one delayed ACK apart."""
    with ServedApp(FastAPI()) as served, httpx.Client() as http:
        assert http.get(served.url + "/openapi.json").status_code == 200
        (connection,) = served._server.server_state.connections  # the kept-alive one
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
