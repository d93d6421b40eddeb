"""Open-loop HTTP load at a fixed rate over keep-alive connections (raw asyncio streams, so the
generator is cheap). Latency is measured from each request's *scheduled* time, so a server
that falls behind is charged for the queueing it causes (no coordinated omission).

python -m bench.loadgen --url http://127.0.0.1:P/v1/recommendations?session_id=s1 --rate 2000 --seconds 10
prints JSON: {"sent", "ok", "errors", "p50_ms", "p99_ms", "achieved_rps"}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlparse


async def run(url: str, rate: float, seconds: float, conns: int) -> dict:
    u = urlparse(url)
    path = u.path + ("?" + u.query if u.query else "")
    req = f"GET {path} HTTP/1.1\r\nHost: {u.hostname}\r\n\r\n".encode()
    start = time.perf_counter() + 0.2
    total = int(rate * seconds)
    next_i = 0
    lat: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal next_i, errors
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        while True:
            i = next_i
            if i >= total:
                break
            next_i += 1
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                errors += 1
            lat.append(time.perf_counter() - due)
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    elapsed = time.perf_counter() - t0
    lat.sort()
    pick = lambda q: 1000 * lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return {
        "sent": total,
        "ok": len(lat) - errors,
        "errors": errors,
        "p50_ms": round(pick(0.5), 3),
        "p99_ms": round(pick(0.99), 3),
        "achieved_rps": round(len(lat) / elapsed, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--conns", type=int, default=64)
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.url, a.rate, a.seconds, a.conns))))


if __name__ == "__main__":
    main()
