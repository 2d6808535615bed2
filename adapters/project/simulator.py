"""The platform as a real HTTP app, answering from the seed exactly.

It checks signatures as the platform does (algorithm, timestamp window, nonce
replay), serves its interface file at ``GET /openapi.yaml`` and takes fault
injection through ``adapters.simulation``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response

from adapters import envelope
from adapters.project import mapping
from adapters.signing import DEFAULT_WINDOW_S
from adapters.simulation import SimulatorControl
from schemas.evidence import PROJECT_CODE
from schemas.seed import Seed

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")


def _answer(code: str, message: str, data: dict[str, Any] | None = None) -> Response:
    return envelope.answer(code, message, data, status=mapping.HTTP_STATUS[code])


def create_app(
    seed: Seed,
    *,
    app_id: str,
    app_secret: str,
    algorithm: str = "hmac-sha256",
    control: SimulatorControl | None = None,
    window_s: float = DEFAULT_WINDOW_S,
) -> FastAPI:
    """A simulator that knows one app (``app_id``/``app_secret``) signing with ``algorithm``."""
    signatures = envelope.SignatureCheck(
        app_id=app_id, secret=app_secret, algorithm=algorithm, window_s=window_s
    )
    control = control or SimulatorControl()
    projects = {p.project_code: mapping.data_from_seed(p, seed.licences) for p in seed.projects}
    app = envelope.simulator_app(
        title="投资项目在线审批监管平台 (simulator)", openapi_file=OPENAPI_FILE, control=control
    )

    @app.get("/api/v1/projects/{project_code}")
    async def get_project(project_code: str, request: Request) -> Response:
        control.record("GetProject")
        await signatures.verify(request)
        if not PROJECT_CODE.fullmatch(project_code):
            return _answer(envelope.BAD_REQUEST, "项目代码格式错误")
        data = projects.get(project_code)
        if data is None:
            return _answer(mapping.NOT_FOUND, "项目不存在")
        return _answer(envelope.OK, mapping.OK_MESSAGE, data)

    return app
