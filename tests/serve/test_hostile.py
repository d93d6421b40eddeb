"""Issue #19: the serving path under real load and hostile input (a real recops-serve process and a
real Redis; raw sockets where a well-behaved client library would not send the request)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from recops_serve.bundle import load_bundle
from tests.support.serving import metric

pytestmark = pytest.mark.integration


def raw(server, request: bytes, *, half_close: bool = False, timeout: float = 5) -> bytes:
    """Send bytes as they are; read the answer until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(request)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and _complete(out):
                    break
        except TimeoutError:
            pass
        return out


def _complete(resp: bytes) -> bool:
    head, _, body = resp.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return m is not None and len(body) >= int(m.group(1))


def status(resp: bytes) -> int:
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/") else 0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def top_item(bundles) -> int:
    b = load_bundle(str(bundles["v1"]))
    return int(b.item_ids[b.pop_global[0]])


# ------------------------------------------------------------------ 1: features under load
@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk not installed (scripts/system-deps.sh)")
@pytest.mark.parametrize("conns", [256, 1024])
def test_session_features_stay_on_under_many_connections(bundles, redis_server, make_server, conns):
    """redis-py's default pool (100 connections, no waiting) and 50 ms timeouts turned most answers
    into "feature_store":"down" at 256 connections while Redis was healthy."""
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    assert server.post("/v1/events", {"session_id": "x", "item_id": top_item(bundles)}).status_code == 200
    before = metric(server, "recops_recommendation_fallback_total", reason="feature_store_down")
    out = subprocess.run(
        ["wrk", "-t2", f"-c{conns}", "-d4s", f"{server.url}/v1/recommendations?session_id=x&k=10"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    served = int(re.search(r"(\d+) requests in", out).group(1))
    # what matters is that `conns` requests were in flight at once (wrk opens them all and sends on each),
    # not how many the server managed in 4 s. The floor that was here (> 1000) is a speed target and
    # failed on a saturated machine: 569-1,094 served in 4 s at load average ~11, the same bundle with
    # and without its HNSW index (which this request path never searches), 8-15k at load 7-8. The
    # req/s figures live in `python -m bench serve` (connection rows).
    assert served >= conns, out
    down = metric(server, "recops_recommendation_fallback_total", reason="feature_store_down") - before
    assert down == 0, f"{down:.0f} of {served} answers without session features while Redis was healthy"
    assert metric(server, "recops_feature_store_errors_total") == 0
    refused = metric(server, "recops_overload_rejections_total")
    ok = metric(server, "recops_http_requests_total", route="recommendations", code="200")
    assert ok + refused >= served - conns, "every answer is a 200 with features or a counted 503"
    assert server.get("/readyz").json()["feature_store"] == "on"


def test_a_redis_outage_is_visible_costs_little_and_recovers(bundles, redis_server, make_server):
    """Features off (never a 5xx on reads), writes 503 + Retry-After, the degraded state in /readyz
    and a metric, and the open circuit answers without waiting on Redis."""
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    redis_server.stop()
    for _ in range(10):
        r = server.get("/v1/recommendations", session_id="s1")
        assert r.status_code == 200 and r.json()["feature_store"] == "down"
    ready = server.get("/readyz").json()
    assert ready["feature_store"] == "degraded" and ready["feature_store_error"], ready
    assert metric(server, "recops_feature_store_degraded") == 1
    w = server.post("/v1/events", {"session_id": "s1", "item_id": 1, "event_id": "e1"})
    assert w.status_code == 503 and w.headers["retry-after"] == "1", w.text
    redis_server.start()
    deadline = time.time() + 5
    while server.get("/v1/recommendations", session_id="s1").json()["feature_store"] != "on":
        assert time.time() < deadline, "features came back after Redis did"
        time.sleep(0.1)
    assert server.get("/readyz").json()["feature_store"] == "on"
    assert metric(server, "recops_feature_store_degraded") == 0


# ------------------------------------------------------------------ 2: reload survives any failure
def test_reload_retries_after_a_failure_without_a_config_change(bundles, redis_server, make_server, tmp_path):
    """A bundle that raises during warm-up (not a BundleError) once stopped hot reload for good: the
    config's mtime was taken as handled. Now every poll tries again until the bundle is fixed in place."""
    server, path = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    broken = tmp_path / "v2-broken"
    shutil.copytree(bundles["v2"], broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "serving": "not a mapping"}))
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_uri": str(broken)}))
    deadline = time.time() + 10
    while (server.get("/readyz").json()["reload_failures"]) < 3:  # retried on later polls
        assert time.time() < deadline, server.get("/readyz").json()
        time.sleep(0.2)
    ready = server.get("/readyz").json()
    assert ready["model_version"] == "v1" and "AttributeError" in ready["last_error"], ready
    assert metric(server, "recops_model_load_failures_total") >= 3
    (broken / "manifest.json").write_text(json.dumps(manifest))  # fixed in place, config untouched
    deadline = time.time() + 10
    while server.get("/readyz").json()["model_version"] != "v2":
        assert time.time() < deadline, server.get("/readyz").json()
        time.sleep(0.2)
    assert server.get("/readyz").json()["last_error"] is None


# ------------------------------------------------------------------ 4: streaming body limits
def test_a_long_content_length_is_refused_before_the_body_is_read(bundles, redis_server, make_server):
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    head = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
    resp = raw(server, head + b'{"events": [')  # the 50 MB never come: the answer must not wait for them
    assert status(resp) == 413 and b"larger than" in resp, resp[:300]
    assert metric(server, "recops_http_requests_total", route="events", code="413") == 1


def test_chunked_uploads_are_capped_while_reading(bundles, redis_server, make_server):
    """8 concurrent 50 MB chunked posts: each refused with 413 once past 1 MiB; RSS stays flat."""
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    before = rss_mb(server.proc.pid)
    codes: list[int] = []

    def upload() -> None:
        chunk = b"x" * 65536
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(800):  # 50 MiB
                    s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass  # the server answered and closed: what we want
            out = b""
            try:
                while piece := s.recv(65536):
                    out += piece
            except OSError:
                pass
            codes.append(status(out))

    threads = [threading.Thread(target=upload) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == [413] * 8, codes
    assert rss_mb(server.proc.pid) - before < 60, f"RSS {before:.0f} -> {rss_mb(server.proc.pid):.0f} MB"


# ------------------------------------------------------------------ 5: a large batch beside traffic
def test_a_large_batch_does_not_stall_other_requests(bundles, redis_server, make_server):
    """An 18,000-event batch held the event loop ~0.9 s; now it is parsed and stored in slices, so
    other requests are answered *while* it runs. Relative, not a latency target (that lives in
    bench/serve), however fast or loaded the machine is: other requests are answered during the
    batch (held loop: none), and their typical wait is a small part of the batch's own time. Not
    the single longest wait: one preemption or collection on these shared cores can take ~50 ms
    of a ~80 ms batch (CI35), which says nothing about the batch holding the loop."""
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    item = top_item(bundles)
    batch = {
        "events": [{"session_id": f"b{n % 500}", "item_id": item, "type": "view"} for n in range(18_000)]
    }
    body = json.dumps(batch, separators=(",", ":")).encode()
    assert len(body) < 1 << 20

    async def run() -> tuple[list[float], float, float, int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            await c.get("/v1/recommendations", params={"user_id": "warm"})
            done = asyncio.Event()
            gaps: list[float] = []

            async def probe() -> None:
                last = time.perf_counter()
                while not done.is_set():
                    assert (await c.get("/v1/recommendations", params={"user_id": "p"})).status_code == 200
                    now = time.perf_counter()
                    gaps.append((now, now - last))
                    last = now

            task = asyncio.create_task(probe())
            await asyncio.sleep(0.2)
            t0 = time.perf_counter()
            r = await c.post("/v1/events", content=body)
            t1 = time.perf_counter()
            done.set()
            await task
            return gaps, t0, t1, r.json()["stored"]

    gaps, t0, t1, stored = asyncio.run(run())
    assert stored == 18_000
    during = sorted(gap for at, gap in gaps if t0 < at < t1)  # answers that arrived while it ran
    assert len(during) >= 3, f"{len(during)} other answers during the batch's {1000 * (t1 - t0):.0f} ms"
    typical = during[len(during) // 2]
    assert typical < 0.25 * (t1 - t0), (
        f"other requests typically waited {1000 * typical:.0f} ms of the batch's {1000 * (t1 - t0):.0f} ms"
    )


# ------------------------------------------------------------------ 6: never a 500 from client input
def test_bad_input_is_a_400_never_a_500(bundles, redis_server, make_server):
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    r = server.post("/v1/events", {"session_id": "s", "item_id": 1, "type": ["view"]})
    assert r.status_code == 400 and "type must be one of" in r.json()["error"]
    # a malformed value in a session key: that session is served (entries skipped, counted)
    rc = redis.Redis.from_url(redis_server.url)
    rc.lpush("recops:s:garbled", b"\xff\xfe", b"not:an:entry", b"12:view:xx", f"{top_item(bundles)}:view:1")
    r = server.get("/v1/recommendations", session_id="garbled")
    assert r.status_code == 200 and r.json()["feature_store"] == "on", r.text
    assert metric(server, "recops_feature_store_malformed_entries_total") == 3
    assert metric(server, "recops_feature_store_errors_total") == 0
    rc.set("recops:s:wrongtype", "a string, not a list")
    for _ in range(10):  # Redis answers (WRONGTYPE): healthy, so the breaker stays closed
        r = server.get("/v1/recommendations", session_id="wrongtype")
        assert r.status_code == 200 and r.json()["feature_store"] == "on", r.text
    assert server.get("/readyz").json()["feature_store"] == "on"
    # a Content-Length longer than the body (the client then stops sending): a counted 400
    short = raw(
        server,
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'{"session_id": "s"',
        half_close=True,
    )
    bad_chunk = raw(
        server,
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    for resp in (short, bad_chunk):
        assert status(resp) in (0, 400), resp[:300]  # 0: the HTTP layer closed the broken connection
    assert metric(server, "recops_http_requests_total", code="500") == 0
    assert server.get("/healthz").status_code == 200
    log = Path(server.proc.args[server.proc.args.index("--config") + 1]).parent
    assert not any("Traceback" in p.read_text() for p in log.glob("server-*.log"))


# ------------------------------------------------------------------ 7: unforgeable attribution
def test_attribution_tokens_cannot_be_forged(bundles, redis_server, make_server):
    """ "holdout" or "model:forged" used to be counted for lift. Now a token is HMAC-signed over arm,
    track, version and issue time: anything that is not a token is a 400; a well-formed token with a
    bad signature is stored but never attributed (counted as forged)."""
    server, _ = make_server(
        {"model_uri": str(bundles["v1"]), "holdout_percent": 50, "holdout_salt": "lift"},
        redis_server.url,
        "secret-one",
    )
    genuine = server.get("/v1/recommendations", user_id="u1").json()
    token, arm = genuine["attribution_token"], genuine["arm"]
    assert token.startswith(f"{arm}:stable:v1:"), token
    other_arm = "holdout" if arm == "model" else "model"
    elsewhere, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url, "another-key")
    foreign = elsewhere.get("/v1/recommendations", user_id="u1").json()["attribution_token"]

    def post(tok):
        ev = {"user_id": "u1", "item_id": 1, "type": "purchase", "attribution_token": tok}
        return server.post("/v1/events", ev)

    for not_a_token in (
        "holdout",
        "model:forged",
        "control:stable:v1:0:0:x",
        "model:stable:v1:zz:0:x",
        12345,
    ):
        r = post(not_a_token)
        assert r.status_code == 400 and "attribution_token" in r.json()["error"], (not_a_token, r.text)
    forged = (
        f"model:stable:v1:{int(time.time()):x}:0:AAAAAAAAAAAAAAAAAAAAAA",
        token.replace(f"{arm}:", f"{other_arm}:", 1),  # a genuine token with its arm changed
        token.replace(":stable:", ":canary:", 1),  # ... or its track
        foreign,  # minted with another key
    )
    for tok in forged:
        r = post(tok)
        assert r.status_code == 200 and r.json() == {"stored": 1}, (tok, r.text)
    assert metric(server, "recops_attributed_events_total") == 0, "nothing forged was counted"
    assert metric(server, "recops_attribution_rejected_total", reason="forged") == len(forged)
    assert post(token).status_code == 200
    assert metric(server, "recops_attributed_events_total", arm=arm, type="purchase") == 1


def test_an_expired_token_is_stored_but_not_attributed(bundles, redis_server, make_server):
    server, _ = make_server(
        {"model_uri": str(bundles["v1"]), "attribution_window_seconds": 1}, redis_server.url
    )
    token = server.get("/v1/recommendations", user_id="u1").json()["attribution_token"]
    time.sleep(2.1)
    r = server.post(
        "/v1/events", {"user_id": "u1", "item_id": 1, "type": "purchase", "attribution_token": token}
    )
    assert r.status_code == 200 and r.json() == {"stored": 1}
    assert metric(server, "recops_attributed_events_total") == 0
    assert metric(server, "recops_attribution_rejected_total", reason="expired") == 1


# ------------------------------------------------------------------ 8: idempotent writes
def test_events_with_an_event_id_are_stored_once(bundles, redis_server, make_server):
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    rc = redis.Redis.from_url(redis_server.url)
    ev = {"session_id": "idem", "item_id": 7, "type": "view", "event_id": "e-1"}
    assert server.post("/v1/events", ev).json() == {"stored": 1}
    assert server.post("/v1/events", ev).json() == {"stored": 0, "duplicates": 1}
    batch = {"events": [ev, {**ev, "event_id": "e-2"}, {**ev, "event_id": "e-2"}, {**ev, "event_id": None}]}
    assert server.post("/v1/events", batch).json() == {"stored": 2, "duplicates": 2}
    assert rc.llen("recops:s:idem") == 3
    assert metric(server, "recops_events_ingested_total", type="view") == 3, "duplicates are not counted"
    # a session id that looks like a dedupe key cannot collide with one
    assert server.post("/v1/events", {**ev, "session_id": "idem:e:e-1"}).json() == {"stored": 1}


def test_a_503_during_a_redis_stall_is_safe_to_retry(bundles, redis_server, make_server):
    """Events answered 503 during a stall may be in Redis afterwards; a retry with the same event_ids
    must not duplicate them, and the 503 says when to retry."""
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    rc = redis.Redis.from_url(redis_server.url)
    batch = {"events": [{"session_id": "stall", "item_id": n, "event_id": f"ev-{n}"} for n in range(50)]}
    os.kill(redis_server.proc.pid, signal.SIGSTOP)  # a stall: the write reaches Redis, its answer comes late
    try:
        first = server.post("/v1/events", batch)
        time.sleep(0.5)
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    assert first.status_code == 503 and first.headers["retry-after"] == "1", first.text
    time.sleep(0.5)
    deadline = time.time() + 5
    while (retry := server.post("/v1/events", batch)).status_code != 200:
        assert time.time() < deadline, retry.text
        time.sleep(0.3)
    assert rc.llen("recops:s:stall") == 50, "each event stored exactly once"


# ------------------------------------------------------------------ 9: unchecked values
def test_every_field_is_checked(bundles, redis_server, make_server):
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    rc = redis.Redis.from_url(redis_server.url)
    for ts in (1e308, -1e12, 10**30, True, "1700000000", time.time() - 2 * 86400):
        r = server.post(
            "/v1/events", b'{"session_id": "t", "item_id": 1, "ts": %s}' % json.dumps(ts).encode()
        )
        assert r.status_code == 400 and "ts must be a unix timestamp within" in r.json()["error"], (
            ts,
            r.text,
        )
    for item in (-1, 2**64, True, 1.5):
        r = server.post("/v1/events", {"session_id": "t", "item_id": item})
        assert r.status_code == 400 and "item_id" in r.json()["error"], (item, r.text)
    r = server.post("/v1/events", {"session_id": "t", "item_id": 1, "event_id": ""})
    assert r.status_code == 400 and "event_id" in r.json()["error"]
    assert rc.llen("recops:s:t") == 0, "nothing invalid was stored"
    for k in (" 5 ", "+5", "5_0", "\u0665", "-1", "5.0"):
        r = server.get("/v1/recommendations", user_id="u", k=k)
        assert (
            r.status_code == 400 and "k must be a non-negative integer in ASCII digits" in r.json()["error"]
        ), k
    n_cat = load_bundle(str(bundles["v1"])).cat_ptr.size - 1
    r = server.get("/v1/recommendations", user_id="u", category=n_cat + 1000)
    assert r.status_code == 400 and f"category {n_cat + 1000} is not a category" in r.json()["error"], r.text
    assert server.get("/v1/recommendations", user_id="u", category=0).status_code == 200
    # invalid UTF-8: refused, not collapsed to U+FFFD (two distinct ids would share one session)
    for q in ("session_id=%FF", "session_id=%C3%28"):
        r = httpx.get(f"{server.url}/v1/recommendations?{q}")
        assert r.status_code == 400 and "UTF-8" in r.json()["error"], r.text
    assert server.post("/v1/events", b'{"session_id": "\xff", "item_id": 1}').status_code == 400
    assert server.post("/v1/events", b'{"session_id": "\\udc80", "item_id": 1}').status_code == 400


# ------------------------------------------------------------------ 10: methods
def test_methods_are_enforced_with_allow(bundles, redis_server, make_server):
    server, _ = make_server({"model_uri": str(bundles["v1"])}, redis_server.url)
    for path in ("/v1/recommendations?user_id=u", "/healthz", "/readyz", "/metrics", "/openapi.json"):
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "POST"):
            r = httpx.request(method, f"{server.url}{path}", timeout=5)
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", (method, path, r.status_code)
        assert httpx.get(f"{server.url}{path}").status_code == 200
    for method in ("GET", "PUT", "DELETE"):
        r = httpx.request(method, f"{server.url}/v1/events", timeout=5)
        assert r.status_code == 405 and r.headers["allow"] == "POST", (method, r.status_code)
