"""Dead letters through the ops API and the CLI: filters, still-dead, dry run, loop guard, audit.

Dead letters are made for real: the marketing simulator refuses a notice kind
for good (JG 2), so the marketing worker dead-letters those events at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from gateway.bootstrap import Container
from gateway.settings import Settings
from gateway.store.models import DeadLetterReplay, DeadLetterReplayItem
from tests.integration.conftest import Platform
from tests.integration.test_async_flows import a_case, application_of, file_case
from tests.running import eventually, running, settings_env

LETTERS = "/api/v1/ops/dead-letters"


async def letters(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await api.get(LETTERS, params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def notices(platforms: dict[str, Platform]) -> list[dict[str, str]]:
    result: list[dict[str, str]] = (await platforms["marketing"].admin("GET", "notices")).json()[
        "notices"
    ]
    return result


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "dlq", *args],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_dead_letters_are_filtered_replayed_after_a_dry_run_and_loop_guarded(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    await platforms["marketing"].admin("PUT", "reject", ["case_received"])
    cases = [a_case("SH2026112600801"), a_case("SH2026112600802")]
    for case in cases:
        await file_case(platforms, settings, api_port, case)
    first, second = [await application_of(connector, case.case_no) for case in cases]

    async def dead_count(n: int, **params: Any) -> bool:
        return len(await letters(api, worker="marketing", **params)) == n

    async with running(connector, "marketing", "timeline"):
        await eventually(lambda: dead_count(2))
        listed = await letters(api)
        assert {d["application_id"] for d in listed} == {first, second}
        assert all(d["state"] == "dead" and d["replays"] == 0 for d in listed)
        assert all(d["original_topic"] == "ywtb.case.events" for d in listed)
        by_app = {d["application_id"]: d["event_id"] for d in listed}

        # Filters: topic, worker, error text, application, time.
        assert len(await letters(api, topic="ywtb.case.events")) == 2
        assert len(await letters(api, topic="ywtb.case.events.dlq")) == 2
        assert await letters(api, topic="ywtb.permit.events") == []
        assert await letters(api, worker="ywtb-status") == []
        assert len(await letters(api, error="PLATFORMREJECTED")) == 2
        assert await letters(api, error="timed out") == []
        assert [d["event_id"] for d in await letters(api, application_id=first)] == [by_app[first]]
        hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        in_an_hour = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert len(await letters(api, since=hour_ago, until=in_an_hour)) == 2
        assert await letters(api, since=in_an_hour) == []

        # Bad input is a problem, and changes nothing.
        bad_range = await api.get(LETTERS, params={"since": in_an_hour, "until": hour_ago})
        assert bad_range.status_code == 422
        assert bad_range.headers["content-type"] == "application/problem+json"
        assert bad_range.json()["errors"][0]["field"] == "until"
        for body in ({"event_ids": []}, {"event_ids": "x"}, {}, {"event_ids": ["x" * 65]}):
            refused = await api.post(f"{LETTERS}/replay", json=body)
            assert refused.status_code == 422, body
            assert refused.headers["content-type"] == "application/problem+json"
        assert (await api.get(LETTERS, headers={"Authorization": "Bearer nope"})).status_code == 401

        # Detail: headers, payload, attempt history.
        detail = (await api.get(f"{LETTERS}/{by_app[first]}")).json()
        assert detail["headers"]["ce_id"] == by_app[first]
        assert detail["payload"]["case_no"] == cases[0].case_no
        assert [h["attempt"] for h in detail["history"]] == [1]
        assert "拒收" in detail["history"][0]["error"]
        assert (await api.get(f"{LETTERS}/no-such-event")).status_code == 404

        # A dry run says what would be sent where, and sends nothing.
        dry = await api.post(
            f"{LETTERS}/replay", json={"event_ids": [by_app[first], "no-such"], "dry_run": True}
        )
        assert dry.status_code == 200, dry.text
        assert [
            (i["event_id"], i["outcome"], i["worker"], i["target_topic"])
            for i in dry.json()["items"]
        ] == [
            (by_app[first], "would_send", "marketing", "ywtb.case.events.retry"),
            ("no-such", "not_found", None, None),
        ]
        await asyncio.sleep(1.5)
        assert await dead_count(2)
        assert all(d["replays"] == 0 for d in await letters(api))

        # Still refused: each replay dies again; the newer letter replaces the older one.
        for n in range(1, 4):
            sent = await api.post(
                f"{LETTERS}/replay", json={"event_ids": [by_app[first]], "dry_run": False}
            )
            assert [i["outcome"] for i in sent.json()["items"]] == ["sent"]

            async def died_again(n: int = n) -> bool:
                mine = await letters(api, application_id=first)
                return [d["replays"] for d in mine] == [n]

            await eventually(died_again)
        everything = await letters(api, application_id=first, include_resolved="true")
        assert sorted(d["state"] for d in everything) == [
            "dead",
            "replayed",
            "replayed",
            "replayed",
        ]

        # The loop guard: replayed max_replays (3) times without success, it is held back.
        held = await api.post(
            f"{LETTERS}/replay",
            json={"event_ids": [by_app[first], by_app[second]], "dry_run": False},
        )
        outcomes = {i["event_id"]: i["outcome"] for i in held.json()["items"]}
        assert outcomes[by_app[first]] == "held_back"
        assert outcomes[by_app[second]] == "sent"  # refused still: it will die again

        async def second_died_again() -> bool:
            return [d["replays"] for d in await letters(api, application_id=second)] == [1]

        await eventually(second_died_again)

        # The fix; the CLI replays what is left and a letter applied since is no longer listed.
        await platforms["marketing"].admin("DELETE", "reject")
        replay = await asyncio.to_thread(cli, settings, "replay", by_app[second])
        assert replay.returncode == 0, replay.stderr
        assert json.loads(replay.stdout)["outcome"] == "sent"

        async def arrived() -> bool:
            return [n["TZID"] for n in await notices(platforms)] == [by_app[second]]

        await eventually(arrived)
        await eventually(lambda: dead_count(1))
        listing = await asyncio.to_thread(cli, settings, "list")
        assert listing.returncode == 0, listing.stderr
        assert [json.loads(line)["event_id"] for line in listing.stdout.splitlines()] == [
            by_app[first]
        ]
        again = await api.post(
            f"{LETTERS}/replay", json={"event_ids": [by_app[second]], "dry_run": False}
        )
        assert [i["outcome"] for i in again.json()["items"]] == ["not_dead"]

    # Every replay request is recorded: who, when, which, dry run or not, each outcome.
    async with connector.sessions() as session:
        replays = (
            await session.scalars(select(DeadLetterReplay).order_by(DeadLetterReplay.id))
        ).all()
        items = (
            await session.scalars(select(DeadLetterReplayItem).order_by(DeadLetterReplayItem.id))
        ).all()
    assert [(r.actor.split(":")[0], r.dry_run) for r in replays] == [
        ("sandbox", True),
        ("sandbox", False),
        ("sandbox", False),
        ("sandbox", False),
        ("sandbox", False),
        ("cli", False),
        ("sandbox", False),
    ]
    assert [i.outcome for i in items] == [
        "would_send",
        "not_found",
        "sent",
        "sent",
        "sent",
        "held_back",
        "sent",
        "sent",
        "not_dead",
    ]
    history = (await api.get("/api/v1/ops/replays")).json()["items"]
    assert history[0]["counts"] == {"not_dead": 1}
    assert history[-1]["counts"] == {"would_send": 1, "not_found": 1}


async def test_the_application_shows_its_dead_lettered_job_with_the_reason(
    api: httpx.AsyncClient,
    connector: Container,
    platforms: dict[str, Platform],
    settings: Settings,
    api_port: int,
) -> None:
    await platforms["marketing"].admin("PUT", "reject", ["case_received"])
    case = a_case("SH2026112600811")
    await file_case(platforms, settings, api_port, case)
    application_id = await application_of(connector, case.case_no)

    async def jobs() -> list[dict[str, Any]]:
        resource = (await api.get(f"/api/v1/applications/{application_id}")).json()
        result: list[dict[str, Any]] = resource["jobs"]
        return result

    assert await jobs() == []
    async with running(connector, "marketing", "timeline"):

        async def dead() -> bool:
            return [j["status"] for j in await jobs()] == ["dead"]

        await eventually(dead)
        [job] = await jobs()
        assert job["worker"] == "marketing"
        assert job["event_type"] == "cn.sgcc.sh.ywtb.case.received"
        assert job["last_error"].startswith("PlatformRejected")
        assert "拒收" in job["last_error"]

        async def on_the_timeline() -> bool:
            items = (await api.get(f"/api/v1/applications/{application_id}/events")).json()
            return any(
                d["status"] == "dead" and "拒收" in d["last_error"]
                for i in items
                for d in i["deliveries"]
            )

        await eventually(on_the_timeline)

        await platforms["marketing"].admin("DELETE", "reject")
        sent = await api.post(
            f"{LETTERS}/replay", json={"event_ids": [job["event_id"]], "dry_run": False}
        )
        assert [i["outcome"] for i in sent.json()["items"]] == ["sent"]

        async def done() -> bool:
            return await jobs() == []

        await eventually(done)
