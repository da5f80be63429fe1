"""Where the front door's CPU goes per wait-mode order, stage by stage, in CPU time.

py-spy (bench.profile) samples wall time: a door that wakes Redis or wrk with a socket write
is often descheduled inside that write while the woken process runs on the other core, so
the writes look several times dearer than the CPU they cost. This measures CPU instead: the
door process runs with each synchronous stage of an order wrapped in a timer of its own
thread's CPU time (time.thread_time), exclusive of the stages it calls, less the timer's own
measured cost. Coroutines cannot be timed this way (others run while they wait); what no
stage holds is reported as the rest: the event loop, coroutines, futures and timers,
aiohttp's per-request cycle, redis-py, the admission's pipelines and the latency metric.

Two runs: the door as it is (its CPU per order from /proc, and the ceiling's per request),
then the instrumented door (about 24 timers per order: slower; the stage figures are CPU per
order with the timers' own cost taken out).

Usage:  python -m bench.door_stages [--seconds 6] [--connections 64]   (needs wrk)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.e2e import _import, cpu_seconds, stack, wrk

# (label, module, attribute: a function, or Class.method) of the synchronous stages
STAGES = [
    ("parse the request (aiohttp's C parser, per read)", "aiohttp.web_protocol",
     "RequestHandler.data_received"),
    ("pick the lean route", "engine.http.lean", "lean_route"),
    ("the lean call object", "engine.http.lean", "LeanCall.__init__"),
    ("maintenance and breaker checks", "engine.http.lean", "refusal"),
    ("bearer key to storefront", "engine.config.directory", "Directory.principal"),
    ("decode and validate the body (msgspec)", "engine.wire", "ORDER_REQUEST.json"),
    ("the order's own checks (SKU, limits)", "engine.http.orders", "_check"),
    ("placement: block list, buckets, pauses, review, price, the order", "engine.http.orders",
     "placement"),
    ("start: expect the reply, queue the admission", "engine.http.placing", "_start"),
    ("queue the admission", "engine.door.ingest", "Ingest.admit"),
    ("expect the worker's reply", "engine.door.replies", "ReplyHub.expect"),
    ("encode the order for the stream (msgpack)", "engine.door.ingest", "msgpack_encode"),
    ("deliver the replies (per pub/sub message)", "engine.door.replies", "ReplyHub._deliver"),
    ("settle: the answer from the reply", "engine.http.placing", "_settled"),
    ("the order view (the answer's body)", "engine.http.placing", "_answer"),
    ("RateLimit headers and notices", "engine.http.orders", "_answer"),
    ("encode the answer (JSON)", "engine.http.lean", "encode_body"),
    ("settle headers (RateLimit, notices)", "engine.http.lean", "settle_headers"),
    ("render the answer's bytes", "engine.http.lean", "_render"),
    ("write the answer (one socket write)", "engine.http.lean", "LeanResponse.prepare"),
    ("the latency metric", "engine.metrics", "RouteLatency.observe"),
    ("aiohttp's writer object per request", "aiohttp.http_writer", "StreamWriter.__init__"),
]

# Loaded by the door process (PYTHONPATH): wraps the stages, writes their CPU at exit.
HOOK = '''
import atexit, functools, importlib, inspect, json, os, sys, time
if "serve" in sys.argv and os.environ.get("KAMIGATE_STAGES_OUT"):
    sys.path.insert(0, os.getcwd())
    STAGES = json.loads(os.environ["KAMIGATE_STAGES"])
    TOTALS = {}
    STACK = [0.0]  # CPU of the stages called by the one running, per level
    tt = time.thread_time

    def timed(label, fn):
        record = TOTALS.setdefault(label, [0, 0.0])
        if inspect.iscoroutinefunction(fn):  # timed up to its first suspension only
            async def wrapper(*args, **kwargs):
                start = tt()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    record[0] += 1
                    record[1] += tt() - start
            return functools.wraps(fn)(wrapper)

        def wrapper(*args, **kwargs):
            start = tt()
            STACK.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                inner = STACK.pop()
                spent = tt() - start
                record[0] += 1
                record[1] += spent - inner
                STACK[-1] += spent
        return functools.wraps(fn)(wrapper)

    def install():
        for label, module_name, attribute in STAGES:
            owner = importlib.import_module(module_name)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            setattr(owner, name, timed(label, getattr(owner, name)))
        probe = timed("(timer)", lambda: None)
        for _ in range(200_000):
            probe()

    def dump():
        with open(os.environ["KAMIGATE_STAGES_OUT"], "w") as out:
            json.dump(TOTALS, out)

    atexit.register(dump)
    install()
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench.door_stages needs wrk", file=sys.stderr)
        return 2
    with stack() as s:  # the door as it runs, for its real CPU per order
        asyncio.run(_import(s.kg_port, 200_000))
        ceiling_us = _cpu_per_request(s.hello.pid, s.hello_port, args)[1]
        door_us = _cpu_per_request(s.door.pid, s.kg_port, args)[1]
    with tempfile.TemporaryDirectory() as tmp:
        hook, out = Path(tmp) / "hook", Path(tmp) / "stages.json"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(HOOK)
        os.environ.update(KAMIGATE_STAGES=json.dumps(STAGES), KAMIGATE_STAGES_OUT=str(out),
                          PYTHONPATH=os.pathsep.join(filter(None, [
                              str(hook), os.environ.get("PYTHONPATH")])))
        with stack() as s:
            asyncio.run(_import(s.kg_port, 200_000))
            run, timed_us = _cpu_per_request(s.door.pid, s.kg_port, args)
        totals = json.loads(out.read_text())
    print(report(totals, run, timed_us, door_us, ceiling_us))
    return 0


def _cpu_per_request(pid: int, port: int, args: argparse.Namespace
                     ) -> tuple[dict[str, float], float]:
    before = cpu_seconds(pid)
    run = wrk(port, args.seconds, args.connections)
    return run, (cpu_seconds(pid) - before) / max(run["requests"], 1) * 1e6


def report(totals: dict[str, list[float]], run: dict[str, float], timed_us: float,
           door_us: float, ceiling_us: float) -> str:
    """The stages' CPU per order, the rest, and the door against the ceiling."""
    calls, spent = totals.pop("(timer)")
    timer_us = spent / calls * 1e6
    orders = run["requests"]
    lines = [f"the door {door_us:.1f} µs of CPU per wait-mode order, the ceiling "
             f"{ceiling_us:.1f} µs per request ({door_us / ceiling_us:.2f}x)",
             f"instrumented: {orders:.0f} orders in {run['seconds']:.1f} s, {timed_us:.1f} µs "
             f"per order; each timer costs {timer_us:.2f} µs, taken out below",
             "", f"{'stage':66} {'per order':>9} {'µs/order':>9}"]
    stages = timers = 0.0
    for label, _, _ in STAGES:
        count, cpu = totals.get(label, (0, 0.0))
        per_order = count / orders
        us = max(0.0, cpu / orders * 1e6 - timer_us * per_order)
        stages += us
        timers += timer_us * per_order
        lines.append(f"{label:66} {per_order:9.2f} {us:9.1f}")
    lines += ["", f"{'the stages above':66} {'':9} {stages:9.1f}",
              f"{'the rest, instrumented less the timers and the stages':66} {'':9} "
              f"{timed_us - timers - stages:9.1f}",
              "  (the event loop and its system calls, coroutines, futures and timers, "
              "aiohttp's request cycle, redis-py and the admission's pipelines)"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
