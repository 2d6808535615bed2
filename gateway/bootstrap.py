"""The composition root: ``bootstrap(settings)`` builds everything the connector runs on.

Called from the FastAPI lifespan and from each CLI command; nothing is built at
import time. Keyword overrides replace a part (tests hand in their own).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.bus import KafkaBus
from gateway.settings import Settings, load_settings
from gateway.store.db import Sessions, open_store, transaction
from gateway.store.models import ApiClient, utcnow


def hash_key(key: str) -> str:
    """API keys are stored as their SHA-256 (keys are random, long and never reused)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    sessions: Sessions
    bus: KafkaBus
    http: httpx.AsyncClient
    extras: dict[str, Any] = field(default_factory=dict)

    async def aclose(self) -> None:
        await self.bus.close()
        await self.http.aclose()
        await self.engine.dispose()


async def register_api_clients(sessions: Sessions, keys: dict[str, str]) -> None:
    """Make the configured clients' keys valid (a changed key replaces the old one)."""
    async with transaction(sessions) as session:
        for name, key in keys.items():
            client = await session.scalar(select(ApiClient).where(ApiClient.name == name))
            if client is None:
                session.add(ApiClient(name=name, key_hash=hash_key(key), created_at=utcnow()))
            else:
                client.key_hash = hash_key(key)


async def bootstrap(settings: Settings | None = None, **overrides: Any) -> Container:
    settings = settings or load_settings()
    if not settings.kafka.bootstrap:
        raise RuntimeError(
            "YWTB_KAFKA_BOOTSTRAP is not set (only `ywtb sandbox` starts a development broker)"
        )
    engine, sessions = await open_store(settings.store)
    keys = {name: key.get_secret_value() for name, key in settings.security.api_keys.items()}
    if settings.environment == "sandbox":
        keys["sandbox"] = settings.sandbox.api_key.get_secret_value()
    await register_api_clients(sessions, keys)
    container = Container(
        settings=settings,
        engine=engine,
        sessions=sessions,
        bus=overrides.pop("bus", None) or KafkaBus(settings.kafka),
        http=overrides.pop("http", None) or httpx.AsyncClient(),
        extras=overrides,
    )
    return container
