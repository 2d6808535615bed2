"""What every platform adapter and its simulator must satisfy, written once.

As FastStream does for its brokers (``tests/brokers/base/``): an abstract
suite per shape, subclassed once per platform in ``contract_tests/<platform>/``.
A subclass says how to build its simulator and client and how to make one call;
the tests here then hold for every platform alike:

- building the client touches no network;
- an answer slower than the timeout is ``PlatformUnavailable`` (timed out);
- transient errors (5xx) are retried until the platform recovers, and applied once;
- a platform that is down is ``PlatformUnavailable`` after every attempt;
- a permanent error (bad credential, an unreadable answer) is translated and never
  retried; a transient one (5xx, connection refused) is translated after the last try;
- the breaker opens after its threshold, fails fast, and closes after a good trial;
- every client has a breaker of its own;
- the simulator serves its interface file (WSDL, ``openapi.yaml``) as in the
  repository, and refuses replayed requests;
- SOAP: one signed SOAP 1.1 operation per call, in the WSDL's namespace;
- signed REST: the signature verifies (hmac-sha256 and hmac-sm3), a stale one is
  refused, and success and error answers validate against ``openapi.yaml``.

``SoapContract`` adds what the SOAP platforms share, ``SignedRestContract`` what
the signed JSON REST ones share. The hooks (``check_*``) are where a platform adds
what only it guarantees to a shared test; they do nothing unless overridden.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI
from lxml import etree

from adapters.resilience import BreakerState, CircuitBreaker
from adapters.signing import sign_request, verify_request
from adapters.simulation import Faults, ReceivedRequest, ServedApp, SimulatorControl
from contract_tests.helpers import (
    SOAP11,
    USER_AGENT,
    WSDL,
    assert_digest_token,
    assert_replay_refused,
    assert_serves_repository_wsdl,
    requests_made_building,
    wsdl_namespace,
)
from schemas.errors import PlatformRejected, PlatformUnavailable, Unauthorized

ATTEMPTS = 3


def _refuse_connection(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


class ManualClock:
    """A breaker's clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class PlatformContract(ABC):
    """The contract of one platform: its adapter against its simulator, over loopback."""

    platform: ClassVar[str]
    """The platform's name in errors and breakers (``PLATFORM`` of its ``errors.py``)."""
    operation: ClassVar[str]
    """The operation the simulator counts for ``call`` (``control.calls``)."""
    interface_file: ClassVar[Path]

    # --- what a platform provides ---------------------------------------------

    @abstractmethod
    def make_app(self, control: SimulatorControl, **options: Any) -> FastAPI:
        """A fresh simulator app recording into ``control``."""

    client_type: ClassVar[type[Any]]
    """The adapter's client: keyword-only ``http``, ``base_url``, ``timeout_s``,
    ``attempts``, ``breaker`` and its credentials."""

    @abstractmethod
    def credentials(self, *, good: bool) -> dict[str, Any]:
        """The client's credential arguments: the agreed ones, or wrong ones."""

    def make_client(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        good_credential: bool = True,
        timeout_s: float = 2.0,
        attempts: int = ATTEMPTS,
        breaker: CircuitBreaker | None = None,
        **options: Any,
    ) -> Any:
        """The adapter's client for the simulator at ``url``."""
        return self.client_type(
            http=http,
            base_url=url,
            timeout_s=timeout_s,
            attempts=attempts,
            breaker=breaker,
            **self.credentials(good=good_credential),
            **options,
        )

    @abstractmethod
    async def call(self, client: Any) -> Any:
        """One call of ``operation`` that succeeds against a healthy simulator."""

    # --- hooks: what a platform adds to a shared test ---------------------------

    def check_result(self, result: Any) -> None:
        """The answer of a successful ``call``."""
        return None  # nothing more by default

    async def check_applied_once(self, http: httpx.AsyncClient, simulator: ServedApp) -> None:
        """After a call retried past injected errors: the platform applied it once."""
        return None  # nothing more by default

    async def check_refused_credential(
        self, error: Exception, http: httpx.AsyncClient, simulator: ServedApp
    ) -> None:
        """After a call refused for its credential."""
        return None  # nothing more by default

    def check_attempts_while_down(self, received: list[ReceivedRequest]) -> None:
        """The requests the simulator received while down (one per attempt)."""
        return None  # nothing more by default

    # --- fixtures --------------------------------------------------------------

    @pytest.fixture
    def control(self) -> SimulatorControl:
        """A control of the test's own: slow answers it abandons are counted nowhere else."""
        return SimulatorControl()

    @pytest.fixture
    def simulator(self, control: SimulatorControl, serve: Callable[[Any], ServedApp]) -> ServedApp:
        return serve(self.make_app(control))

    # --- the contract ------------------------------------------------------------

    async def test_building_the_client_touches_no_network(self) -> None:
        requests = await requests_made_building(
            lambda http: self.make_client(f"http://{self.platform}.invalid", http)
        )

        assert requests == []

    async def test_answer_slower_than_the_timeout_is_unavailable(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        control.faults = Faults(latency_s=1.5)
        # 0.5 s: long enough for a loaded machine to deliver the request, far below 1.5 s.
        client = self.make_client(simulator.url, http, timeout_s=0.5, attempts=2)

        with pytest.raises(PlatformUnavailable, match="timed out") as caught:
            await self.call(client)

        assert caught.value.platform == self.platform
        assert len(control.received) == 2

    async def test_the_simulator_reports_how_long_each_answer_took(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        control.faults = Faults(latency_s=0.05)
        self.check_result(await self.call(self.make_client(simulator.url, http)))

        answers = (await http.get(f"{simulator.url}/_admin/calls")).json()["answer_ms"]
        assert len(answers) == len(control.received) >= 1
        assert all(50 <= ms < 5000 for ms in answers), answers

    async def test_injected_server_errors_are_retried_until_the_platform_recovers(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        statuses: list[int] = []

        async def recover_after_two_errors(response: httpx.Response) -> None:
            statuses.append(response.status_code)
            if len(statuses) == 2:
                control.faults = Faults()

        control.faults = Faults(error_rate=1.0)
        async with httpx.AsyncClient(
            event_hooks={"response": [recover_after_two_errors]}
        ) as hooked:
            result = await self.call(self.make_client(simulator.url, hooked, attempts=3))

        assert statuses == [500, 500, 200]
        assert control.calls[self.operation] == 1, "only the last attempt reached the platform"
        self.check_result(result)
        await self.check_applied_once(http, simulator)

    async def test_platform_down_is_unavailable_after_every_attempt(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        put = await http.put(f"{simulator.url}/_admin/faults", json={"down": True})
        assert put.status_code == 200

        with pytest.raises(PlatformUnavailable) as caught:
            await self.call(self.make_client(simulator.url, http, attempts=ATTEMPTS))

        assert caught.value.platform == self.platform
        assert len(control.received) == ATTEMPTS
        assert control.calls[self.operation] == 0
        self.check_attempts_while_down(list(control.received))

    async def test_a_refused_credential_is_unauthorized_and_not_retried(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        client = self.make_client(simulator.url, http, good_credential=False, attempts=ATTEMPTS)

        with pytest.raises(Unauthorized) as caught:
            await self.call(client)

        assert control.calls[self.operation] == 1
        assert len(control.received) == 1
        await self.check_refused_credential(caught.value, http, simulator)

    async def test_the_breaker_opens_fails_fast_and_closes_after_a_good_trial(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        clock = ManualClock()
        breaker = CircuitBreaker(
            self.platform, failure_threshold=2, reset_timeout_s=60.0, clock=clock
        )
        client = self.make_client(simulator.url, http, attempts=ATTEMPTS, breaker=breaker)
        assert client.breaker is breaker
        control.faults = Faults(down=True)

        with pytest.raises(PlatformUnavailable):
            await self.call(client)

        assert len(control.received) == 2, "the third attempt failed fast"
        assert breaker.state is BreakerState.OPEN
        assert breaker.snapshot()["consecutive_failures"] == 2

        with pytest.raises(PlatformUnavailable) as caught:
            await self.call(client)

        assert "circuit open" in caught.value.detail
        assert len(control.received) == 2, "no further request reached the platform"

        control.faults = Faults()
        clock.now += 60.0
        assert breaker.state is BreakerState.HALF_OPEN

        self.check_result(await self.call(client))

        assert breaker.state is BreakerState.CLOSED
        assert control.calls[self.operation] == 1

    @pytest.mark.parametrize(
        ("answer", "error", "tries"),
        [
            (lambda _: httpx.Response(200, text="<html>proxy</html>"), PlatformRejected, 1),
            (lambda _: httpx.Response(502), PlatformUnavailable, ATTEMPTS),
            (_refuse_connection, PlatformUnavailable, ATTEMPTS),
        ],
        ids=["unreadable-answer", "bad-gateway", "connection-refused"],
    )
    async def test_failures_are_translated_into_the_error_tree(
        self,
        answer: Callable[[httpx.Request], httpx.Response],
        error: type[PlatformRejected | PlatformUnavailable],
        tries: int,
    ) -> None:
        """Whatever the library raised, the caller sees the project's error, with the
        platform; a permanent one is not retried, a transient one is until the last try."""
        requests: list[httpx.Request] = []

        def respond(request: httpx.Request) -> httpx.Response:
            requests.append(request)
            return answer(request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(respond)) as http:
            client = self.make_client(f"http://{self.platform}.invalid", http)
            with pytest.raises(error) as caught:
                await self.call(client)

        assert caught.value.platform == self.platform
        assert len(requests) == tries

    async def test_each_client_has_a_breaker_of_its_own(self, http: httpx.AsyncClient) -> None:
        url = f"http://{self.platform}.invalid"
        first, second = self.make_client(url, http), self.make_client(url, http)

        assert first.breaker is not second.breaker
        assert first.breaker.platform == self.platform
        assert first.breaker.state is BreakerState.CLOSED


class SoapContract(PlatformContract):
    """SOAP 1.1 platforms: a WSDL of the repository, WS-Security UsernameToken."""

    service_path: ClassVar[str]
    username: ClassVar[str]
    password: ClassVar[str]

    def credentials(self, *, good: bool) -> dict[str, Any]:
        return {
            "username": self.username,
            "password": self.password if good else "not-the-password",
        }

    def check_operation_sent(self, request: ReceivedRequest, fields: dict[str, Any]) -> None:
        """The operation's elements (by local name) and the headers of the one request."""
        return None  # nothing more by default

    async def check_after_replay(self, http: httpx.AsyncClient, simulator: ServedApp) -> None:
        """After the replay was refused."""
        return None  # nothing more by default

    async def test_a_call_is_one_signed_soap11_operation(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        self.check_result(await self.call(self.make_client(simulator.url, http)))

        [request] = control.received
        assert (request.method, request.path) == ("POST", self.service_path)
        assert request.headers["content-type"].startswith("text/xml")
        assert request.headers["user-agent"] == USER_AGENT  # the caller's client, untouched
        envelope = etree.fromstring(request.body)
        assert envelope.tag == f"{{{SOAP11}}}Envelope"
        ns = wsdl_namespace(self.interface_file)
        body = envelope.find(f"{{{SOAP11}}}Body")
        assert body is not None
        [operation] = body
        assert operation.tag == f"{{{ns}}}{self.operation}"
        assert all(etree.QName(child).namespace == ns for child in operation)
        assert_digest_token(request.body, self.username, self.password)
        self.check_operation_sent(
            request, {etree.QName(child).localname: child.text for child in operation}
        )

    async def test_served_wsdl_is_the_one_in_the_repository(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        # Apart from the address, the document is the repository's, byte for byte in C14N.
        served = await assert_serves_repository_wsdl(
            http, simulator.url + self.service_path, self.interface_file, self.operation
        )

        repo = etree.parse(str(self.interface_file)).getroot()
        assert served.get("targetNamespace") == repo.get("targetNamespace")
        operations = [op.get("name") for op in served.iter(f"{{{WSDL}}}operation")]
        assert operations == [op.get("name") for op in repo.iter(f"{{{WSDL}}}operation")]

    async def test_simulator_refuses_a_replayed_request(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        await self.call(self.make_client(simulator.url, http))
        [original] = control.received

        await assert_replay_refused(
            http, simulator.url + self.service_path, original.body, self.interface_file
        )
        await self.check_after_replay(http, simulator)


class SignedRestContract(PlatformContract):
    """JSON REST platforms whose requests are signed (``adapters.signing``)."""

    app_id: ClassVar[str]
    app_secret: ClassVar[str]

    def credentials(self, *, good: bool) -> dict[str, Any]:
        return {"app_id": self.app_id, "app_secret": self.app_secret if good else "not-the-secret"}

    async def check_refused_credential(
        self, error: Exception, http: httpx.AsyncClient, simulator: ServedApp
    ) -> None:
        assert isinstance(error, Unauthorized)
        assert error.code == "bad_signature"

    @abstractmethod
    def validate_answer(self, response: httpx.Response) -> None:
        """An answer (success or error) against the interface file."""

    def check_interface_schemas(self) -> None:
        """The interface file's schemas are valid JSON Schema of their dialect."""
        return None  # nothing more by default

    def check_signed_request(
        self, received: ReceivedRequest, result: Any, started_at: datetime
    ) -> None:
        """The one request a call made: method, path, body (the signature is checked here)."""
        return None  # nothing more by default

    def check_attempts_while_down(self, received: list[ReceivedRequest]) -> None:
        assert len({r.headers["x-nonce"] for r in received}) == len(received), "signed afresh"

    async def test_simulator_serves_its_interface_file(
        self, simulator: ServedApp, http: httpx.AsyncClient
    ) -> None:
        response = await http.get(f"{simulator.url}/openapi.yaml")

        assert response.status_code == 200
        assert response.text == self.interface_file.read_text(encoding="utf-8")
        self.check_interface_schemas()

    @pytest.mark.parametrize("algorithm", ["hmac-sha256", "hmac-sm3"])
    async def test_the_request_carries_a_signature_that_verifies_with_the_shared_secret(
        self,
        control: SimulatorControl,
        serve: Callable[[Any], ServedApp],
        algorithm: str,
    ) -> None:
        simulator = serve(self.make_app(control, algorithm=algorithm))
        started_at = datetime.now().astimezone().replace(microsecond=0)
        answers: list[httpx.Response] = []

        async def keep(response: httpx.Response) -> None:
            await response.aread()
            answers.append(response)

        async with httpx.AsyncClient(event_hooks={"response": [keep]}) as hooked:
            client = self.make_client(simulator.url, hooked, algorithm=algorithm)
            result = await self.call(client)

        [answer] = answers
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("application/json")
        self.validate_answer(answer)

        [received] = control.received
        assert received.headers["x-app-id"] == self.app_id
        assert received.headers["x-sign-alg"] == algorithm
        assert abs(int(received.headers["x-timestamp"]) - time.time() * 1000) < 60_000
        assert received.headers["x-nonce"]
        app_id = verify_request(
            received.method,
            received.path,
            received.body,
            received.headers,
            lookup_secret=lambda app: self.app_secret if app == self.app_id else None,
            allowed_algorithms={algorithm},
        )
        assert app_id == self.app_id
        self.check_result(result)
        self.check_signed_request(received, result, started_at)

    async def test_a_replayed_request_is_refused(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        await self.call(self.make_client(simulator.url, http))
        [original] = control.received
        headers = {
            k: v for k, v in original.headers.items() if k.startswith("x-") or k == "content-type"
        }

        replay = await http.request(
            original.method, simulator.url + original.path, content=original.body, headers=headers
        )

        assert (replay.status_code, replay.json()["code"]) == (401, "4012")
        assert control.calls[self.operation] == 2
        self.validate_answer(replay)

    async def test_a_stale_timestamp_is_refused(
        self, simulator: ServedApp, http: httpx.AsyncClient, control: SimulatorControl
    ) -> None:
        await self.call(self.make_client(simulator.url, http))
        [original] = control.received
        headers = sign_request(
            original.method,
            original.path,
            original.body,
            app_id=self.app_id,
            secret=self.app_secret,
            now=time.time() - 3600,
        )
        headers["content-type"] = original.headers.get("content-type", "application/json")

        stale = await http.request(
            original.method, simulator.url + original.path, content=original.body, headers=headers
        )

        assert (stale.status_code, stale.json()["code"]) == (401, "4011")
        self.validate_answer(stale)
