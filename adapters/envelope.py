"""The signed JSON REST convention of 投资项目平台, 占掘路平台 and 一网通办.

Every answer is the envelope ``{"code": ..., "msg": ..., "data": ...}`` (``data``
only where there is some), with these codes common to all three platforms:

=========================  ==========================================
envelope code              raised as
=========================  ==========================================
0000 成功                   (success)
4010, 4011, 4012           ``Unauthorized`` (not retried), with the
                           ``adapters.signing`` failure word as code
5000, any 5xxx, HTTP 5xx   ``PlatformUnavailable`` (transient)
the platform's own codes   as its ``EnvelopePlatform.extra_codes`` say
anything else (4000, ...)  ``PlatformRejected`` with the code
=========================  ==========================================

Requests are signed (``adapters.signing``) over exactly what goes on the wire,
afresh for every attempt. The simulator side (``simulator_app``,
``SignatureCheck``, ``answer``) answers the way the platforms do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from adapters import bounded
from adapters.resilience import (
    CircuitBreaker,
    httpx_errors,
    raise_for_server_error,
    retry_transient,
)
from adapters.signing import (
    DEFAULT_WINDOW_S,
    MemoryNonceStore,
    Signer,
    get_algorithm,
    verify_request,
)
from adapters.simulation import SimulatorControl, install_control
from schemas.errors import (
    Conflict,
    ConnectorError,
    NotFound,
    PlatformRejected,
    PlatformUnavailable,
    Unauthorized,
)

T = TypeVar("T")

# Envelope codes (返回码) every platform uses.
OK = "0000"  # 成功
BAD_REQUEST = "4000"  # 请求参数错误
BAD_SIGNATURE = "4010"  # 签名无效或应用未登记
STALE_TIMESTAMP = "4011"  # 时间戳超出有效期
REPLAYED_NONCE = "4012"  # 随机数重复
INTERNAL_ERROR = "5000"  # 系统内部错误

#: Our answer to a platform's callback once it is taken (what the platforms expect).
CALLBACK_ACK: Mapping[str, str] = {"code": OK, "msg": "成功"}

HTTP_STATUS: dict[str, int] = {
    OK: 200,
    BAD_REQUEST: 400,
    BAD_SIGNATURE: 401,
    STALE_TIMESTAMP: 401,
    REPLAYED_NONCE: 401,
    INTERNAL_ERROR: 500,
}
"""The HTTP status sent with each common code; platforms add their own."""

AUTH_FAILURE_CODES: dict[str, str] = {
    "stale_timestamp": STALE_TIMESTAMP,
    "replayed_nonce": REPLAYED_NONCE,
}
"""``adapters.signing`` failure code → envelope code; every other failure is ``BAD_SIGNATURE``."""

_UNAUTHORIZED: dict[str, str] = {
    BAD_SIGNATURE: "bad_signature",
    STALE_TIMESTAMP: "stale_timestamp",
    REPLAYED_NONCE: "replayed_nonce",
}
"""Envelope code → ``Unauthorized.code`` (the same words ``adapters.signing`` uses)."""

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


def envelope(code: str, message: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An answer body; ``data`` only on success."""
    body: dict[str, Any] = {"code": code, "msg": message}
    if data is not None:
        body["data"] = dict(data)
    return body


def encode(body: Mapping[str, Any]) -> bytes:
    """The bytes the platforms exchange: compact UTF-8 JSON, Chinese unescaped."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --- what a code stands for --------------------------------------------------

ErrorFor = Callable[[str, str, str], ConnectorError]
"""(platform, envelope code, message) → the error a platform's own code stands for."""


def not_found(platform: str, code: str, message: str) -> ConnectorError:
    return NotFound(f"{platform}: {message}", platform=platform, platform_code=code)


def rejected(platform: str, code: str, message: str) -> ConnectorError:
    return PlatformRejected(platform, message, platform_code=code)


def conflict(
    platform: str, code: str, message: str, *, error_code: str | None = None
) -> ConnectorError:
    return Conflict(
        f"{platform}: {message}", code=error_code, platform=platform, platform_code=code
    )


def conflict_as(error_code: str) -> ErrorFor:
    """``Conflict`` with its own ``code`` (e.g. ``"out_of_order"``)."""
    return partial(conflict, error_code=error_code)


@dataclass(frozen=True)
class EnvelopePlatform:
    """One envelope platform: its name and what its own codes stand for."""

    platform: str
    extra_codes: Mapping[str, ErrorFor] = field(default_factory=dict)

    def error(self, code: str, message: str) -> ConnectorError:
        """The error for an envelope whose code is not success."""
        if code in _UNAUTHORIZED:
            return Unauthorized(
                f"{self.platform}: {message}",
                code=_UNAUTHORIZED[code],
                platform=self.platform,
                platform_code=code,
            )
        if code in self.extra_codes:
            return self.extra_codes[code](self.platform, code, message)
        if code.startswith("5"):
            return PlatformUnavailable(
                self.platform, f"{message} (code {code})", platform_code=code
            )
        return PlatformRejected(self.platform, message, platform_code=code)

    def unreadable_answer(self, detail: str, http_status: int) -> PlatformRejected:
        """An answer that is not the documented envelope: retrying will not make it readable."""
        return PlatformRejected(
            self.platform,
            f"unreadable answer (HTTP {http_status}): {detail}",
            platform_code="invalid_answer",
        )

    def read(self, response: httpx.Response) -> object:
        """The ``data`` of a success envelope (None without); raise what any other stands for.

        A 5xx (or 429) is transient whatever its body says.
        """
        raise_for_server_error(self.platform, response)
        try:
            body: Any = bounded.loads(response.content)
        except ValueError as exc:
            raise self.unreadable_answer(f"not JSON ({exc})", response.status_code) from None
        if not isinstance(body, dict) or not isinstance(body.get("code"), str):
            raise self.unreadable_answer("no envelope code", response.status_code)
        code, message = body["code"], str(body.get("msg") or "")
        if code != OK:
            raise self.error(code, message or f"code {code}")
        return body.get("data")

    def read_data(self, response: httpx.Response, parse: Callable[[dict[str, Any]], T]) -> T:
        """A success envelope's ``data`` read by ``parse`` (which raises ``ValueError``)."""
        data = self.read(response)
        if not isinstance(data, dict):
            raise self.unreadable_answer("success without data", response.status_code)
        try:
            return parse(data)
        except ValueError as exc:
            raise self.unreadable_answer(str(exc), response.status_code) from exc


async def send_signed(
    http: httpx.AsyncClient,
    signer: Signer,
    method: str,
    url: str,
    *,
    content: bytes = b"",
    http_timeout: httpx.Timeout,
) -> httpx.Response:
    """Send one request signed with a fresh timestamp and nonce over exactly what goes on
    the wire; a body is sent as JSON."""
    headers = {"Accept": "application/json"}
    if content:
        headers["Content-Type"] = JSON_CONTENT_TYPE
    request = http.build_request(
        method, url, content=content or None, headers=headers, timeout=http_timeout
    )
    target = request.url.raw_path.decode("ascii")
    request.headers.update(signer.headers(method, target, request.content))
    return await bounded.send_bounded(http, request)


class SignedRestClient:
    """What every client of these platforms shares: each request signed, timed out,
    retried on transient errors and guarded by the breaker.

    ``http`` is owned by the caller (connection pool, TLS settings); the client
    only adds the base URL, signing headers and a timeout per call. ``breaker``
    (default: one of its own) guards every attempt. A subclass names its
    ``platform`` and its operations, each one ``call``.
    """

    platform: str

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base_url: str,
        app_id: str,
        app_secret: str,
        algorithm: str = "hmac-sha256",
        timeout_s: float = 5.0,
        attempts: int = 3,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._signer = Signer(app_id, app_secret, algorithm)
        self._timeout = httpx.Timeout(timeout_s)
        self._attempts = attempts
        self.breaker = breaker or CircuitBreaker(self.platform)

    async def call(
        self,
        method: str,
        path: str,
        read: Callable[[httpx.Response], T],
        *,
        content: bytes = b"",
        operation: str,
    ) -> T:
        """``read`` of the answer to one signed request; raises what ``read`` raises or,
        after the last attempt (at once while the breaker is open), ``PlatformUnavailable``.
        """
        async for attempt in retry_transient(self._attempts):
            with attempt, self.breaker.guard(operation), httpx_errors(self.platform):
                response = await send_signed(
                    self._http,
                    self._signer,
                    method,
                    self._base_url + path,
                    content=content,
                    http_timeout=self._timeout,
                )
                return read(response)
        raise AssertionError("retry_transient neither returned nor raised")  # pragma: no cover


# --- simulator side ----------------------------------------------------------


class Refused(Exception):
    """Raised in a simulator's handler: answer the envelope ``code`` with HTTP ``status``."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def answer(code: str, message: str, data: Mapping[str, Any] | None, *, status: int) -> Response:
    """An envelope answer."""
    return JSONResponse(envelope(code, message, data), status_code=status)


def error_response(status: int, message: str) -> Response:
    """An injected failure in the envelope, with the given HTTP status."""
    return answer(INTERNAL_ERROR, message, None, status=status)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return answer(exc.code, exc.message, None, status=exc.status)


def simulator_app(
    *,
    title: str,
    openapi_file: Path,
    control: SimulatorControl,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """A platform simulator app: serves its interface file at ``GET /openapi.yaml``,
    answers ``Refused`` and injected faults (``control``) as envelopes."""
    openapi_text = openapi_file.read_text(encoding="utf-8")
    app = FastAPI(title=title, openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.control = control
    app.add_exception_handler(Refused, _refused)
    install_control(app, control, error_response)

    @app.get("/openapi.yaml", include_in_schema=False)
    async def openapi() -> Response:
        return Response(openapi_text, media_type="application/yaml; charset=utf-8")

    return app


class SignatureCheck:
    """The platform's side of signing: one known app signing with one algorithm.

    ``secret`` is the shared secret, or for ``sm2-sm3`` the app's public key.
    Nonces are remembered for twice the timestamp window.
    """

    def __init__(
        self, *, app_id: str, secret: str, algorithm: str, window_s: float = DEFAULT_WINDOW_S
    ) -> None:
        get_algorithm(algorithm)  # refuse an unknown algorithm at start-up
        self._app_id = app_id
        self._secret = secret
        self._algorithm = algorithm
        self._window_s = window_s
        self._nonces = MemoryNonceStore(ttl_s=2 * window_s)

    def _lookup(self, app_id: str) -> str | None:
        return self._secret if app_id == self._app_id else None

    async def verify(self, request: Request) -> tuple[str, bytes]:
        """The signer's app id and the body; ``Refused`` with 4010, 4011 or 4012 if the
        signature, timestamp or nonce is wrong."""
        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            app_id = verify_request(
                request.method,
                target,
                body,
                request.headers,
                lookup_secret=self._lookup,
                window_s=self._window_s,
                allowed_algorithms={self._algorithm},
                check_nonce=self._nonces.claim,
            )
        except Unauthorized as exc:
            code = AUTH_FAILURE_CODES.get(exc.code, BAD_SIGNATURE)
            raise Refused(code, exc.detail, HTTP_STATUS[code]) from exc
        return app_id, body
