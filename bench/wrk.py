"""The load generator: wrk (Debian's ``wrk``) in its own process, driven by a Lua script.

Every scenario uses the same Lua machinery (``COMMON``): it counts answers per
status and those carrying ``Retry-After``, and prints one ``BENCH {json}`` line
with throughput and latency percentiles, so the baselines and the connector are
measured the same way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

COMMON = r"""
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  run = args[1]
  statuses = {}
  retry_after = 0
  counter = 0
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if headers["Retry-After"] or headers["retry-after"] then
    retry_after = retry_after + 1
  end
end
function done(summary, latency, requests)
  local total, shed = {}, 0
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do total[k] = (total[k] or 0) + v end
    shed = shed + t:get("retry_after")
  end
  local parts = {}
  for k, v in pairs(total) do table.insert(parts, string.format('"%d": %d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "socket_errors": %d, "timeouts": %d, "retry_after": %d, ' ..
    '"statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect + e.read + e.write, e.timeout, shed,
    table.concat(parts, ", ")))
end
"""


def lua_string(value: str) -> str:
    """A Lua string literal (long brackets: no escaping needed)."""
    return f"[==[{value}]==]"


def post_script(path: str, body: str, headers: dict[str, str], *, pause_ms: int = 0) -> str:
    """POST ``body`` to ``path``; each request gets its own ``Idempotency-Key``, in every run of
    the script (a key is the run's id, the thread's and a count).

    With ``pause_ms``, each connection pauses before each request, a random 0 to twice
    ``pause_ms`` (so the connections do not move in step): a paced load, not a flood.
    """
    fixed = ", ".join(f"[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items())
    paced = f"function delay()\n  return math.random(0, {2 * pause_ms})\nend\n" if pause_ms else ""
    return (
        COMMON
        + paced
        + (
            f"local PATH, BODY = {lua_string(path)}, {lua_string(body)}\n"
            "function request()\n"
            "  counter = counter + 1\n"
            f"  local h = {{{fixed}}}\n"
            '  h["Idempotency-Key"] = run .. "-" .. id .. "-" .. counter\n'
            '  return wrk.format("POST", PATH, h, BODY)\n'
            "end\n"
        )
    )


def cycle_script(requests: list[tuple[str, str, dict[str, str], str]], threads: int) -> str:
    """Send the given ``(method, path, headers, body)`` requests, each thread its own share.

    Thread *i* takes requests i, i+threads, ...; after the last it starts again
    (so a one-use request list must be long enough for the run).
    """
    rows = []
    for method, path, headers, body in requests:
        hdrs = ", ".join(f"[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items())
        rows.append(f"{{{lua_string(method)}, {lua_string(path)}, {{{hdrs}}}, {lua_string(body)}}}")
    return COMMON + (
        "local REQS = {\n" + ",\n".join(rows) + "\n}\n"
        f"local THREADS = {threads}\n"
        "function request()\n"
        "  local n = ((counter * THREADS + id - 1) % #REQS) + 1\n"
        "  counter = counter + 1\n"
        "  local r = REQS[n]\n"
        '  return wrk.format(r[1], r[2], r[3], r[4] ~= "" and r[4] or nil)\n'
        "end\n"
    )


@dataclass
class LoadResult:
    connections: int
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int] = field(default_factory=dict)
    retry_after: int = 0
    socket_errors: int = 0
    timeouts: int = 0

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if s.startswith("2"))

    @property
    def shed(self) -> int:
        """Answers 503/429 with ``Retry-After``: load refused as designed."""
        return min(self.retry_after, self.statuses.get("503", 0) + self.statuses.get("429", 0))

    @property
    def errors(self) -> int:
        """Everything that is neither 2xx nor shed: other statuses, socket errors, timeouts."""
        return self.requests - self.ok - self.shed + self.socket_errors + self.timeouts

    @property
    def ok_rps(self) -> float:
        """Successful answers per second: the throughput the goals compare (a shed request
        is answered fast, so ``rps`` grows with shedding)."""
        return round(self.ok / self.seconds, 1) if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {
            "ok": self.ok,
            "ok_rps": self.ok_rps,
            "shed": self.shed,
            "errors": self.errors,
        }


def wrk(url: str, script: str, *, connections: int, seconds: float, threads: int = 2) -> LoadResult:
    """Run wrk against ``url`` with ``script``; one result."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (Debian package 'wrk'; `make bench` installs it)")
    threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = Path(handle.name)
    try:
        done = subprocess.run(
            [
                binary,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(path),
                url,
                "--",
                uuid.uuid4().hex,  # the run's id: the script's args[1]
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    finally:
        path.unlink(missing_ok=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    raw = json.loads(line.removeprefix("BENCH "))
    elapsed = raw["duration_us"] / 1e6
    return LoadResult(
        connections=connections,
        seconds=round(elapsed, 2),
        requests=raw["requests"],
        rps=round(raw["requests"] / elapsed, 1) if elapsed else 0.0,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        statuses={str(k): v for k, v in raw["statuses"].items()},
        retry_after=raw["retry_after"],
        socket_errors=raw["socket_errors"],
        timeouts=raw["timeouts"],
    )
