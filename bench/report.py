"""The goals table, ``summary.md``, one JSON file per scenario and the PNG plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

Goal = tuple[str, str, bool | None]  # goal, measured, met (None: not measured)


def _rows(results: dict[str, Any], name: str) -> dict[int, dict[str, Any]]:
    return {r["connections"]: r for r in results.get(name, {}).get("rows", [])}


def _ok_rps(row: dict[str, Any]) -> float:
    """Successful answers per second (what the goals compare; shed answers are not work)."""
    return float(row["ok"]) / row["seconds"] if row["seconds"] else 0.0


def goals(results: dict[str, Any]) -> list[Goal]:
    floor, warm = _rows(results, "floor"), _rows(results, "warm_pg")
    raw = _rows(results, "raw")
    out: list[Goal] = []
    if 8 in raw and 8 in warm:
        ratio = raw[8]["rps"] / max(_ok_rps(warm[8]), 1e-9)
        out.append(
            (
                "load generator not the bottleneck (raw ≫ warm at 8)",
                f"raw {raw[8]['rps']:.0f} req/s = ×{ratio:.1f} warm (successful answers)",
                ratio >= 3,
            )
        )
    for n in (8, 64, 256):
        if n in floor and n in warm:
            ratio = _ok_rps(warm[n]) / max(_ok_rps(floor[n]), 1e-9)
            out.append(
                (
                    f"warm ≥ 50 % of the persistence floor at {n} connections",
                    f"{_ok_rps(warm[n]):.0f} / {_ok_rps(floor[n]):.0f} ok/s = {ratio:.0%}",
                    ratio >= 0.5,
                )
            )
    paced = results.get("warm_pg", {}).get("paced")
    if warm and paced:
        top = max(_ok_rps(r) for r in warm.values())
        out.append(
            (
                "warm p99 ≤ 50 ms at half the highest throughput",
                f"paced, {_ok_rps(paced):.0f} of {top:.0f} ok/s: p99 {paced['p99_ms']:.1f} ms",
                paced["p99_ms"] <= 50,
            )
        )
    for n in (64, 256):
        if n in warm:
            r = warm[n]
            out.append(
                (
                    f"no error at {n} connections (503 + Retry-After counts as shed)",
                    f"{r['errors']} errors, {r['shed']} shed of {r['requests']}",
                    r["errors"] == 0 and r["requests"] > 0,
                )
            )
    cold = results.get("cold")
    if cold:
        one = _rows(results, "cold").get(1)
        # The platform's latency is how long it took to answer, as the simulator measured it:
        # the injected wait and the simulator's own work (at least the injected wait).
        answered = cold.get("platform_answer_p50_ms", {}).get("1") or {}
        slowest = max([cold["platform_latency_ms"], *answered.values()])
        limit = slowest + 15
        if one:
            out.append(
                (
                    f"cold p50 ≤ slowest platform + 15 ms ({slowest:.1f} + 15 ms)",
                    f"p50 {one['p50_ms']:.1f} ms (platforms answered in p50 "
                    + ", ".join(f"{k} {v:.1f}" for k, v in sorted(answered.items()))
                    + " ms)",
                    one["p50_ms"] <= limit,
                )
            )
    callback = _rows(results, "callback")
    if 8 in callback and 8 in floor:
        ratio = _ok_rps(callback[8]) / max(_ok_rps(floor[8]), 1e-9)
        out.append(
            (
                "signed-callback ingestion ≥ 50 % of the floor",
                f"{_ok_rps(callback[8]):.0f} / {_ok_rps(floor[8]):.0f} ok/s = {ratio:.0%}",
                ratio >= 0.5,
            )
        )
    for relay in (results.get("relay"), results.get("relay_pg")):
        if not relay:
            continue
        ratio = relay["relay_events_per_s"] / max(relay["baseline_events_per_s"], 1)
        out.append(
            (
                f"relay ≥ 60 % of the bare producer ({relay['store']})",
                f"{relay['relay_events_per_s']} / {relay['baseline_events_per_s']} ev/s"
                f" = {ratio:.0%}",
                ratio >= 0.6,
            )
        )
    scale = results.get("scale", {}).get("sizes", {})
    if len(scale) == 2:
        (small_n, small), (large_n, large) = sorted(scale.items(), key=lambda kv: int(kv[0]))
        drop = 1 - _ok_rps(large["warm"]) / max(_ok_rps(small["warm"]), 1e-9)
        extra = large["get"]["p50_ms"] - small["get"]["p50_ms"]
        out.append(
            (
                f"{int(large_n):,} applications cost < 10 % of warm throughput vs {int(small_n):,}",
                f"{_ok_rps(large['warm']):.0f} vs {_ok_rps(small['warm']):.0f} ok/s ({drop:+.0%})",
                drop < 0.10,
            )
        )
        out.append(
            (
                f"… and < 2 ms of GET p50 vs {int(small_n):,}",
                f"{large['get']['p50_ms']:.2f} vs {small['get']['p50_ms']:.2f} ms ({extra:+.2f})",
                extra < 2,
            )
        )
    return out


def table(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# make bench",
        "",
        f"{meta['when']}, {meta['machine']}, {meta['seconds_per_run']} s per wrk run, "
        f"{meta['took_s']} s in all.",
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
    ]
    for goal, measured, met in goals(results):
        lines.append(f"| {goal} | {measured} | {'yes' if met else 'NO'} |")
    lines += ["", "## Throughput and latency by connections", ""]
    lines += [
        "| scenario | conns | answers/s | ok/s | p50 ms | p99 ms | ok | shed | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        for r in result.get("rows", []):
            lines.append(
                f"| {name} | {r['connections']} | {r['rps']:.0f} | {_ok_rps(r):.0f} | "
                f"{r['p50_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['ok']} | {r['shed']} | {r['errors']} |"
            )
    workers = results.get("workers", {}).get("workers", {})
    if workers:
        lines += ["", "## Workers", "", "| worker | backlog | msg/s |", "|---|---|---|"]
        for name, w in workers.items():
            lines.append(f"| {name} | {w['backlog']} | {w['messages_per_s']} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in ("raw", "floor", "warm_pg", "warm_sqlite"):
        rows = results.get(name, {}).get("rows", [])
        if not rows:
            continue
        conns = [r["connections"] for r in rows]
        left.plot(conns, [_ok_rps(r) for r in rows], marker="o", label=name)
        right.plot(conns, [r["p50_ms"] for r in rows], marker="o", label=f"{name} p50")
        right.plot(
            conns, [r["p99_ms"] for r in rows], marker="x", linestyle="--", label=f"{name} p99"
        )
    for axis, title, unit in ((left, "throughput", "ok/s"), (right, "latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("connections")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.legend(fontsize=7)
    right.set_yscale("log")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(folder: Path, results: dict[str, Any], meta: dict[str, Any]) -> None:
    folder.mkdir(exist_ok=True)
    for name, result in results.items():
        (folder / f"{name}.json").write_text(
            json.dumps({**meta, **result}, indent=2, ensure_ascii=False) + "\n"
        )
    summary = table(results, meta)
    (folder / "summary.md").write_text(summary)
    plot(results, folder / "throughput_latency.png")
    sys.stdout.write("\n" + summary)
    sys.stdout.write(f"\nresults in {folder}/ (summary.md, *.json, throughput_latency.png)\n")
