"""The pages of the ops console: overview, dead letters (browse, inspect, replay), search.

Plain HTML forms, no script; every asset is served from this package, so it
works on an intranet. Signed in with an API key (kept as a signed session
cookie, never in clear) or with ``Authorization: Bearer``. Every POST carries
a form token bound to the session, and the cookie is ``SameSite=Strict``.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.access import Client, hash_key
from gateway.api.deps import ContainerDep
from gateway.api.flows import load_timeline
from gateway.api.problems import status_for
from gateway.bootstrap import Container
from gateway.console import session as sessions
from gateway.dlq import DeadLetterFilter, ReplayReport
from gateway.lag import worker_lag
from gateway.outbox import backlog
from gateway.settings import Scope
from gateway.store.models import Application, ApplicationEvidence, Case
from gateway.workers import WORKER_TOPICS
from schemas.applications import ApplicationStatus, EvidenceStatus
from schemas.errors import ConnectorError, Forbidden, InvalidInput, NotFound, Unauthorized
from schemas.events import TOPICS

STATIC = Path(__file__).with_name("static")
PREFIX = "/ops"

router = APIRouter(prefix=PREFIX, include_in_schema=False)


class LoginRequired(Exception):
    """No valid session or key: the browser is sent to the login form."""


class BadFormToken(Unauthorized):
    """A POST without the session's form token (cross-site request, or an old page)."""

    code = "bad_form_token"


@dataclass(frozen=True)
class Operator:
    """Who is using the console: an API client, and the token its forms carry."""

    client: str
    csrf: str
    binding: str
    principal: Client


def _secret(request: Request) -> bytes:
    container: Container = request.app.state.container
    configured = container.settings.console.session_secret
    if configured is not None:
        return configured.get_secret_value().encode()
    secret: bytes = request.app.state.console_secret
    return secret


async def operator(request: Request, container: ContainerDep) -> Operator:
    """The signed-in client, from ``Authorization: Bearer`` or the session cookie.

    Both are checked against the configured clients (``container.clients``), exactly
    as the API checks its keys: a key removed from the settings ends its sessions.
    """
    secret = _secret(request)
    authorization = request.headers.get("authorization", "")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() == "bearer" and key:
        client = container.clients.authenticate(key.strip())
        if client is None:
            raise LoginRequired
        binding = f"bearer:{hash_key(key.strip())}"
        return Operator(client.name, sessions.csrf_token(secret, binding), binding, client)
    cookie = request.cookies.get(sessions.COOKIE)
    found = sessions.verify(secret, cookie) if cookie else None
    if cookie is None or found is None:
        raise LoginRequired
    client = next(
        (
            c
            for key_hash, c in container.clients.keys_of(found.client).items()
            if hmac.compare_digest(sessions.fingerprint(secret, key_hash), found.key_fingerprint)
        ),
        None,
    )
    if client is None:
        raise LoginRequired
    return Operator(client.name, sessions.csrf_token(secret, cookie), cookie, client)


def _scoped(scope: Scope) -> Callable[[Operator], Awaitable[Operator]]:
    async def check(who: Annotated[Operator, Depends(operator)]) -> Operator:
        if not who.principal.may(scope):
            raise Forbidden(f"client {who.client} lacks the scope {scope}")
        return who

    return check


console_reader = _scoped("ops:read")
console_replayer = _scoped("ops:replay")

Reader = Annotated[Operator, Depends(console_reader)]
Replayer = Annotated[Operator, Depends(console_replayer)]


async def _form(request: Request) -> dict[str, list[str]]:
    body = (await request.body()).decode("utf-8", "replace")
    return parse_qs(body, keep_blank_values=True)


def _one(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0]


def _check_token(request: Request, who: Operator, form: dict[str, list[str]]) -> None:
    if not sessions.csrf_ok(_secret(request), who.binding, _one(form, "csrf")):
        raise BadFormToken("this form has expired or did not come from the console; reload it")


def _page(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.console_templates
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _error(request: Request, who: Operator | None, error: ConnectorError) -> HTMLResponse:
    """An error as a console page, with the status the API would answer."""
    context = {"who": who, "message": error.detail, "code": error.code}
    return _page(request, "error.html", context, status_code=status_for(error))


def _safe_next(target: str) -> str:
    """Only a console path: never an open redirect."""
    if target.startswith(f"{PREFIX}") and not target.startswith("//"):
        return target
    return PREFIX


# --- sign in and out ---------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, next: str = PREFIX) -> HTMLResponse:
    return _page(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
async def login(request: Request, container: ContainerDep) -> Response:
    form = await _form(request)
    key, target = _one(form, "api_key").strip(), _safe_next(_one(form, "next"))
    client = container.clients.authenticate(key)
    if client is None:
        context = {"next": target, "error": "This API key is not valid."}
        refused = Unauthorized("unknown API key", code="bad_credentials")
        return _page(request, "login.html", context, status_code=status_for(refused))
    ttl = container.settings.console.session_ttl_s
    value = sessions.issue(_secret(request), client.name, hash_key(key), ttl)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        sessions.COOKIE,
        value,
        max_age=int(ttl),
        path=PREFIX,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
async def logout(request: Request, who: Reader) -> Response:
    _check_token(request, who, await _form(request))
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path=PREFIX)
    return response


# --- overview ------------------------------------------------------------------------


async def _lag(container: Container) -> tuple[list[dict[str, Any]], str | None]:
    """Lag rows of every worker (read concurrently), or why they could not be read."""
    try:
        async with asyncio.timeout(15):
            parts = await asyncio.gather(
                *(
                    worker_lag(container.settings.kafka, {name: topics})
                    for name, topics in WORKER_TOPICS.items()
                )
            )
    except (ConnectorError, TimeoutError, OSError) as exc:
        return [], getattr(exc, "detail", None) or f"{type(exc).__name__}: {exc}"
    return [row for rows in parts for row in rows], None


def lag_by_worker(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per worker: messages behind (``lag``, summed) and any age in seconds (a key ending
    ``_s`` or ``seconds``, e.g. ``age_s``: the oldest, not a sum) over its partitions."""
    totals: dict[str, dict[str, Any]] = {}
    for row in rows:
        total = totals.setdefault(row["worker"], {"worker": row["worker"]})
        for key, value in row.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if key.endswith(("_s", "seconds")):
                total[key] = max(total.get(key, 0), value)
            elif key == "lag" or key.startswith("lag_"):
                total[key] = total.get(key, 0) + value
    return list(totals.values())


async def _dead_letter_counts(container: Container) -> tuple[dict[str, int], str | None]:
    try:
        return await container.dead_letters.counts_by_topic(), None
    except ConnectorError as exc:
        return {}, exc.detail


async def _stuck(container: Container, session: AsyncSession) -> tuple[int, list[dict[str, Any]]]:
    """Applications waiting for evidence longer than ``console.stuck_after_s`` (oldest 50)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=container.settings.console.stuck_after_s)
    waiting = (
        Application.status == ApplicationStatus.EVIDENCE_PENDING.value,
        Application.created_at < cutoff,
    )
    count = await session.scalar(select(func.count()).select_from(Application).where(*waiting))
    rows = (
        await session.scalars(
            select(Application).where(*waiting).order_by(Application.created_at).limit(50)
        )
    ).all()
    pending: dict[str, list[str]] = {}
    if rows:
        for application_id, kind in await session.execute(
            select(ApplicationEvidence.application_id, ApplicationEvidence.kind).where(
                ApplicationEvidence.application_id.in_([r.id for r in rows]),
                ApplicationEvidence.status == EvidenceStatus.PENDING.value,
            )
        ):
            pending.setdefault(application_id, []).append(kind)
    now = datetime.now(UTC)
    return int(count or 0), [
        {
            "id": r.id,
            "created_at": r.created_at,
            "waiting_h": round((now - r.created_at).total_seconds() / 3600, 1),
            "pending": pending.get(r.id, []),
        }
        for r in rows
    ]


@router.get("")
async def overview(request: Request, who: Reader, container: ContainerDep) -> HTMLResponse:
    (lag_rows, lag_error), (dead, dead_error) = await asyncio.gather(
        _lag(container), _dead_letter_counts(container)
    )
    async with container.sessions() as session:  # not held while Kafka is read
        pending, oldest_age = await backlog(session)
        stuck_count, stuck = await _stuck(container, session)
    lag_columns = list(dict.fromkeys(key for row in lag_rows for key in row))
    lag_totals = lag_by_worker(lag_rows)
    total_columns = list(dict.fromkeys(["worker", "lag", *(k for r in lag_totals for k in r)]))
    return _page(
        request,
        "overview.html",
        {
            "who": who,
            "breakers": {name: b.snapshot() for name, b in container.breakers.items()},
            "outbox": {"pending": pending, "oldest_age_s": oldest_age},
            "lag_rows": lag_rows,
            "lag_columns": lag_columns,
            "lag_totals": lag_totals,
            "lag_total_columns": total_columns,
            "lag_error": lag_error,
            "dead": dead,
            "dead_error": dead_error,
            "stuck": stuck,
            "stuck_count": stuck_count,
            "stuck_after_s": container.settings.console.stuck_after_s,
        },
    )


# --- dead letters ----------------------------------------------------------------------


def _when(value: str | None) -> datetime | None:
    """A ``datetime-local`` field (read as UTC) or an ISO 8601 time."""
    if not value:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/dead-letters")
async def dead_letters(
    request: Request,
    who: Reader,
    container: ContainerDep,
    topic: Annotated[str | None, Query()] = None,
    worker: Annotated[str | None, Query()] = None,
    error: Annotated[str | None, Query()] = None,
    since: Annotated[str | None, Query()] = None,
    until: Annotated[str | None, Query()] = None,
    application_id: Annotated[str | None, Query()] = None,
    include_resolved: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    form = {
        "topic": topic or "",
        "worker": worker or "",
        "error": error or "",
        "since": since or "",
        "until": until or "",
        "application_id": application_id or "",
        "include_resolved": include_resolved,
    }
    problem: ConnectorError | None = None
    letters: list[dict[str, Any]] = []
    try:
        filters = DeadLetterFilter(
            topic=topic or None,
            worker=worker or None,
            error=error or None,
            since=_when(since),
            until=_when(until),
            application_id=application_id or None,
            include_resolved=include_resolved,
        )
        letters = [d.summary() for d in await container.dead_letters.find(filters)]
    except ValueError as exc:
        problem = InvalidInput("since", f"invalid time: {exc}")
    except ConnectorError as exc:
        problem = exc
    return _page(
        request,
        "dead_letters.html",
        {
            "who": who,
            "letters": letters,
            "form": form,
            "problem": problem.detail if problem else None,
            "topics": list(TOPICS),
            "workers": list(WORKER_TOPICS),
        },
        status_code=status_for(problem) if problem else 200,
    )


@router.get("/dead-letters/{worker}/{event_id}")
async def dead_letter(
    request: Request, worker: str, event_id: str, who: Reader, container: ContainerDep
) -> HTMLResponse:
    try:
        letter = (await container.dead_letters.get(event_id, worker)).details()
    except NotFound as exc:
        return _error(request, who, exc)
    return _page(request, "dead_letter.html", {"who": who, "letter": letter})


def _report_page(request: Request, who: Operator, report: ReplayReport) -> HTMLResponse:
    items = [item.as_dict() for item in report.items]
    sendable = [i["event_id"] for i in items if i["outcome"] == "would_send"]
    return _page(
        request,
        "replay.html",
        {
            "who": who,
            "report": report.as_dict(),
            "items": items,
            "sendable": list(dict.fromkeys(sendable)),
        },
    )


@router.post("/dead-letters/preview")
async def preview(request: Request, who: Reader, container: ContainerDep) -> HTMLResponse:
    """The dry run: what would be sent where; the page asks for confirmation."""
    form = await _form(request)
    _check_token(request, who, form)
    event_ids = [e for e in form.get("event_ids", []) if e]
    if not event_ids:
        return _error(request, who, InvalidInput("event_ids", "select at least one dead letter"))
    report = await container.dead_letters.replay(event_ids, dry_run=True, actor=who.client)
    return _report_page(request, who, report)


@router.post("/dead-letters/replay")
async def replay(request: Request, who: Replayer, container: ContainerDep) -> HTMLResponse:
    """The real replay, after the preview's confirmation."""
    form = await _form(request)
    _check_token(request, who, form)
    event_ids = [e for e in form.get("event_ids", []) if e]
    if _one(form, "confirm") != "yes" or not event_ids:
        reason = "not confirmed: tick the confirmation on the preview page"
        return _error(request, who, InvalidInput("confirm", reason))
    report = await container.dead_letters.replay(event_ids, dry_run=False, actor=who.client)
    return _report_page(request, who, report)


@router.get("/replays")
async def replays(request: Request, who: Reader, container: ContainerDep) -> HTMLResponse:
    history = await container.dead_letters.history(100)
    return _page(request, "replays.html", {"who": who, "history": history})


# --- applications ------------------------------------------------------------------------


@router.get("/search")
async def search(
    request: Request, who: Reader, container: ContainerDep, q: Annotated[str, Query()] = ""
) -> Response:
    """An application id or a 一网通办 case number (办件编号) leads to the application."""
    q = q.strip()
    if q:
        async with container.sessions() as session:
            if await session.get(Application, q) is not None:
                return RedirectResponse(f"{PREFIX}/applications/{quote(q)}", status_code=303)
            application_id = await session.scalar(
                select(Case.application_id).where(Case.case_no == q)
            )
        if application_id is not None:
            return RedirectResponse(
                f"{PREFIX}/applications/{quote(application_id)}", status_code=303
            )
    if not q:
        return _error(request, who, InvalidInput("q", "enter an application id or a case number"))
    return _error(request, who, NotFound(f"no application or case number “{q}”"))


@router.get("/applications/{application_id}")
async def application(
    request: Request,
    application_id: str,
    who: Reader,
    container: ContainerDep,
) -> HTMLResponse:
    try:
        resource = await container.applications.get(application_id)
    except NotFound as exc:
        return _error(request, who, exc)
    async with container.sessions() as session:
        timeline = await load_timeline(session, application_id)
    case_no = resource.case_no
    return _page(
        request,
        "application.html",
        {
            "who": who,
            "application": resource.model_dump(mode="json"),
            "timeline": [item.model_dump(mode="json") for item in timeline],
            "case_no": case_no,
        },
    )


def install(app: FastAPI) -> None:
    """Add the console to ``app``: its pages, its assets, its sign-in redirect."""
    env = Environment(
        loader=PackageLoader("gateway.console", "templates"),
        autoescape=select_autoescape(default=True),
    )
    app.state.console_templates = Jinja2Templates(env=env)
    app.state.console_secret = secrets.token_bytes(32)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")
    app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, _exc: LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{PREFIX}/login?next={quote(target)}", status_code=303)

    @app.exception_handler(BadFormToken)
    async def _bad_token(request: Request, exc: BadFormToken) -> Response:
        return _error(request, None, exc)
