"""Ingest benchmark: signed hooks posted to the factsync listener vs a bare aiohttp handler doing one LPUSH.

Both servers run in their own process against the same embedded Redis; the load generator (aiohttp client,
pre-signed bodies, N connections) runs in another process. Each round measures both servers, alternating,
so the noisy machine hits both alike; the figures are medians over the rounds.

Phases per server and round:
  saturation  closed loop, --connections concurrent connections, --seconds long: accepted hooks/s, p50/p99
  half        open loop at half of that server's measured saturation rate: p50/p99 (latency counted from
              the scheduled send time, so a stall is not hidden by coordinated omission)

    python bench/ingest.py --rounds 5 --seconds 5 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HOOK_SECRET, SOURCE_KEY, TARGET_KEY, machine, median, percentile


def _quiet() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)


def serve_factsync(redis_url: str, port: int, ready: Any) -> None:
    _quiet()
    from aiohttp import web

    from worker.config import Settings
    from worker.logs import configure_logging
    from worker.web.app import create_app

    settings = Settings(
        redis_url=redis_url,
        listen_port=port,
        metrics=False,
        sources={
            "hostfact": {
                "api_url": "http://127.0.0.1:9/",
                "api_key": SOURCE_KEY,
                "hook_secrets": [HOOK_SECRET],
            }
        },
        targets={"wefact": {"api_url": "http://127.0.0.1:9/", "api_key": TARGET_KEY}},
        routes={"sales": {"source": "hostfact", "target": "wefact"}},
    )
    # As in production: one JSON log line per accepted hook (to /dev/null here).
    configure_logging(secrets=[SOURCE_KEY, TARGET_KEY, HOOK_SECRET], json=True, level="INFO")

    async def main() -> None:
        runner = web.AppRunner(create_app(settings, redis_url), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_baseline(redis_url: str, port: int, ready: Any) -> None:
    _quiet()
    from aiohttp import web
    from redis.asyncio import Redis

    async def main() -> None:
        redis = Redis.from_url(redis_url)

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            await redis.lpush("bench:baseline", body)
            return web.json_response({"status": "queued"}, status=202)

        app = web.Application()
        app.router.add_post("/hooks/{source}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def presign(count: int, tag: str) -> list[tuple[bytes, dict[str, str]]]:
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    hook = Webhook(HOOK_SECRET)
    now = datetime.now(tz=UTC)
    out = []
    for i in range(count):
        body = json.dumps(
            {
                "action": "invoice_is_partly_paid",
                "data": {
                    "id": 1000 + i % 500,
                    "Debtor": 7,
                    "InvoiceCode": f"F{i:06d}",
                    "AmountPaidNow": 5.25,
                    "AmountPaidTotal": 5.25,
                    "AmountOpen": 100.0,
                },
            },
            separators=(",", ":"),
        ).encode()
        webhook_id = f"msg_{tag}_{i}"
        headers = {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": hook.sign(webhook_id, now, body.decode()),
        }
        out.append((body, headers))
    return out


def load(url: str, mode: str, connections: int, seconds: float, rate: float, tag: str, out: Any) -> None:
    """Runs in its own process: post pre-signed hooks, report counts and latencies over the queue."""
    import aiohttp

    # Enough bodies for the phase at up to ~6000/s; signing happens before the clock starts.
    bodies = presign(int(max(rate * seconds * 1.2, 6000 * seconds)) + 100, tag)

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        errors = 0
        index = 0
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def post(sent_at: float) -> None:
                nonlocal index, errors
                body, headers = bodies[index % len(bodies)]
                index += 1
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        statuses[response.status] = statuses.get(response.status, 0) + 1
                    latencies.append(time.perf_counter() - sent_at)
                except aiohttp.ClientError:
                    errors += 1

            # Warm the connections up.
            await asyncio.gather(*(post(time.perf_counter()) for _ in range(connections)))
            latencies.clear()
            statuses.clear()
            start = time.perf_counter()
            end = start + seconds
            if mode == "closed":

                async def loop() -> None:
                    while time.perf_counter() < end:
                        await post(time.perf_counter())

                await asyncio.gather(*(loop() for _ in range(connections)))
            else:
                tasks = []
                interval = 1.0 / rate
                n = 0
                while True:
                    due = start + n * interval
                    if due >= end:
                        break
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(post(due)))
                    n += 1
                await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
        accepted = sum(count for status, count in statuses.items() if 200 <= status < 300)
        return {
            "accepted_per_s": accepted / elapsed,
            "accepted": accepted,
            "statuses": statuses,
            "errors": errors,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
        }

    out.put(asyncio.run(main()))


def run_load(url: str, mode: str, connections: int, seconds: float, rate: float, tag: str) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=load, args=(url, mode, connections, seconds, rate, tag, queue))
    proc.start()
    result: dict[str, Any] = queue.get(timeout=seconds + 300)
    proc.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds (each measures both servers)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections at saturation")
    parser.add_argument("--appendfsync", default="everysec", choices=("everysec", "always", "no"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from redis import Redis

    from worker.embedded_redis import EmbeddedRedis, free_port

    ctx = mp.get_context("spawn")
    results: dict[str, dict[str, list[float]]] = {
        name: {k: [] for k in ("sat_rps", "sat_p50", "sat_p99", "half_rps", "half_p50", "half_p99")}
        for name in ("factsync", "baseline")
    }
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp), appendfsync=args.appendfsync) as rs:
        servers = {}
        for name, target in (("factsync", serve_factsync), ("baseline", serve_baseline)):
            port = free_port()
            ready = ctx.Event()
            proc = ctx.Process(target=target, args=(rs.url, port, ready), daemon=True)
            proc.start()
            if not ready.wait(30):
                raise SystemExit(f"{name} server did not start")
            servers[name] = (proc, f"http://127.0.0.1:{port}/hooks/hostfact")
        redis = Redis.from_url(rs.url)
        try:
            for round_no in range(args.rounds):
                order = ["factsync", "baseline"] if round_no % 2 == 0 else ["baseline", "factsync"]
                for name in order:
                    redis.flushdb()
                    url = servers[name][1]
                    sat = run_load(url, "closed", args.connections, args.seconds, 0, f"{round_no}s{name}")
                    rate = sat["accepted_per_s"] / 2
                    redis.flushdb()
                    half = run_load(url, "open", args.connections, args.seconds, rate, f"{round_no}h{name}")
                    bad = {s: c for s, c in {**sat["statuses"]}.items() if not 200 <= s < 300}
                    r = results[name]
                    r["sat_rps"].append(sat["accepted_per_s"])
                    r["sat_p50"].append(sat["p50_ms"])
                    r["sat_p99"].append(sat["p99_ms"])
                    r["half_rps"].append(half["accepted_per_s"])
                    r["half_p50"].append(half["p50_ms"])
                    r["half_p99"].append(half["p99_ms"])
                    print(
                        f"round {round_no + 1} {name:8s} saturation {sat['accepted_per_s']:7.0f}/s "
                        f"p50 {sat['p50_ms']:6.1f} p99 {sat['p99_ms']:6.1f} ms | at {rate:6.0f}/s "
                        f"p50 {half['p50_ms']:5.1f} p99 {half['p99_ms']:6.1f} ms"
                        + (f" | non-2xx {bad}" if bad or sat["errors"] else ""),
                        flush=True,
                    )
        finally:
            redis.close()
            for proc, _ in servers.values():
                proc.kill()
                proc.join()
    summary: dict[str, Any] = {"machine": machine(), "args": vars(args) | {"json": str(args.json)}}
    for name, r in results.items():
        summary[name] = {k: round(median(v), 2) for k, v in r.items()}
    ratios = [
        f / b for f, b in zip(results["factsync"]["sat_rps"], results["baseline"]["sat_rps"], strict=True)
    ]
    summary["ratio_to_baseline_median"] = round(median(ratios), 3)
    summary["ratio_per_round"] = [round(x, 3) for x in ratios]
    f = summary["factsync"]
    summary["verdict"] = {
        "throughput >= 70% of baseline": summary["ratio_to_baseline_median"] >= 0.70,
        "p99 < 25 ms at half saturation": f["half_p99"] < 25,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
