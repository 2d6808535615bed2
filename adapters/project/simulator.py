"""The platform as a real HTTP app, answering from the seed exactly.

It checks signatures as the platform does (algorithm, timestamp window, nonce
replay), serves its interface file at ``GET /openapi.yaml`` and takes fault
injection through ``adapters.simulation``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from adapters.project import mapping
from adapters.signing import DEFAULT_WINDOW_S, MemoryNonceStore, get_algorithm, verify_request
from adapters.simulation import SimulatorControl, install_control
from schemas.errors import Unauthorized
from schemas.seed import Seed

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")


def error_response(status: int, message: str) -> Response:
    """An injected failure in the platform's envelope, with the given HTTP status."""
    return JSONResponse(mapping.envelope(mapping.INTERNAL_ERROR, message), status_code=status)


def _answer(code: str, message: str, data: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        mapping.envelope(code, message, data), status_code=mapping.HTTP_STATUS[code]
    )


def create_app(
    seed: Seed,
    *,
    app_key: str,
    app_secret: str,
    algorithm: str = "hmac-sha256",
    control: SimulatorControl | None = None,
    window_s: float = DEFAULT_WINDOW_S,
) -> FastAPI:
    """A simulator that knows one app (``app_key``/``app_secret``) signing with ``algorithm``."""
    get_algorithm(algorithm)
    control = control or SimulatorControl()
    projects = {p.project_code: mapping.data_from_seed(p, seed.licences) for p in seed.projects}
    nonces = MemoryNonceStore(ttl_s=2 * window_s)
    openapi_text = OPENAPI_FILE.read_text(encoding="utf-8")

    def lookup_secret(app_id: str) -> str | None:
        return app_secret if app_id == app_key else None

    app = FastAPI(
        title="投资项目在线审批监管平台 (simulator)",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/openapi.yaml", include_in_schema=False)
    async def openapi() -> Response:
        return Response(openapi_text, media_type="application/yaml; charset=utf-8")

    @app.get("/api/v1/projects/{project_code}")
    async def get_project(project_code: str, request: Request) -> Response:
        control.record("GetProject")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            verify_request(
                request.method,
                target,
                await request.body(),
                request.headers,
                lookup_secret=lookup_secret,
                window_s=window_s,
                allowed_algorithms={algorithm},
                check_nonce=nonces.claim,
            )
        except Unauthorized as exc:
            code = mapping.AUTH_FAILURE_CODES.get(exc.code, mapping.BAD_SIGNATURE)
            return _answer(code, exc.detail)
        if not mapping.PROJECT_CODE.fullmatch(project_code):
            return _answer(mapping.BAD_REQUEST, "项目代码格式错误")
        data = projects.get(project_code)
        if data is None:
            return _answer(mapping.NOT_FOUND, "项目不存在")
        return _answer(mapping.OK, mapping.OK_MESSAGE, data)

    install_control(app, control, error_response)
    return app
