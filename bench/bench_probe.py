"""How long a stuck inbox reader goes unnoticed with the delivery probe (docs/redis.md).

A private redis-server behind tests/blackhole_proxy.py; each run starts a layer through the proxy,
waits a random part of an interval, black-holes the reader's connection (open, nothing forwarded)
and measures until the layer marks itself down (odd runs: until health() is not ok, with every
new reader connection black-holed too). The promise is at most two probe intervals.

    python bench/bench_probe.py [--runs 10] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatbot_server.layers.redis import RedisChannelLayer
from tests.blackhole_proxy import BlackHoleProxy
from tests.redis_server import RedisProcess, unique_prefix


async def wait_for(condition: Callable[[], object], deadline: float = 10.0) -> float:
    start = time.monotonic()
    while True:
        asked = time.monotonic()  # a health() that answers not ok was not ok when asked
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return asked - start
        if time.monotonic() - start > deadline:
            raise TimeoutError
        await asyncio.sleep(0.005)


async def one_run(port: int, interval: float, hold: bool) -> tuple[float, float]:
    proxy = BlackHoleProxy(port)
    await proxy.start()
    layer = RedisChannelLayer(url=proxy.url, prefix=unique_prefix(), probe_interval=interval, connect_timeout=1)
    try:
        await layer.start()
        await layer.wait_connected()
        await wait_for(lambda: proxy.readers() == 1 and layer.probe_stats.returned >= 1)
        await asyncio.sleep(random.uniform(0, interval))  # a random phase against the probe's clock
        failures = layer.stats.failures
        proxy.hold_readers = hold
        proxy.black_hole_reader()

        async def unhealthy() -> bool:
            return not (await layer.health()).ok

        took = await wait_for(unhealthy if hold else (lambda: layer.stats.failures > failures))
        return took, layer.probe_stats.round_trip
    finally:
        await layer.close()
        await proxy.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()
    server = RedisProcess()
    server.start()
    marked: list[float] = []
    unhealthy: list[float] = []
    trips: list[float] = []
    try:
        for run in range(2 * args.runs):
            took, trip = await one_run(server.port, args.interval, hold=run % 2 == 1)
            (unhealthy if run % 2 else marked).append(took)
            trips.append(trip)
    finally:
        server.cleanup()
    bound = 2 * args.interval * 1000
    for name, values in (("marked down", marked), ("health not ok (fault held)", unhealthy)):
        median, worst = statistics.median(values) * 1000, max(values) * 1000
        print(f"{name}: median {median:.0f} ms, worst {worst:.0f} ms of {len(values)} (bound {bound:.0f} ms)")
    print(f"probe round trip before the fault: median {statistics.median(trips) * 1000:.2f} ms")


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.ERROR)  # the layer's warnings are expected here
    asyncio.run(main())
