"""The HTTP API without a socket: endpoints, 422 for every kind of bad input, micro-batching."""

import asyncio

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from genrec.inference.http import create_app


@pytest.fixture(scope="module")
def client(rec):
    app = create_app(rec, max_batch=8, max_wait_ms=5)
    with TestClient(app) as c:
        yield c


def test_health_docs_and_recommend(client, rec):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["items"] == 24 and h["model"] == "tiny" and h["uptime_s"] >= 0
    assert client.get("/docs").status_code == 200
    assert "/recommend" in client.get("/openapi.json").json()["paths"]
    r = client.post("/recommend", json={"history": ["m1", "m3"], "k": 5, "exclude": "history"})
    assert r.status_code == 200
    body = r.json()
    want = rec.recommend(["m1", "m3"], k=5, exclude="history")
    assert body["k"] == 5 and [x["item_id"] for x in body["items"]] == [w.item_id for w in want]
    assert np.allclose([x["score"] for x in body["items"]], [w.score for w in want], atol=1e-4)
    r = client.post("/recommend", json={"history": ["m1"], "k": 1000, "where": {"categories": "Drama"}})
    assert r.status_code == 200 and r.json()["k"] == 24 and len(r.json()["items"]) == 8  # 8 dramas


@pytest.mark.parametrize("body, needle", [
    ({"history": ["m1", "ghost1", "ghost2"]}, "'ghost1', 'ghost2'"),
    ({"history": []}, "at least 1 item"),
    ({"history": ["m1"], "k": 0}, "greater than or equal to 1"),
    ({"history": ["m1"], "k": 10 ** 9}, "less than or equal to 1000"),
    ({"history": "m1"}, "valid list"),
    ({"history": [{"id": 1}]}, "history"),
    ({"history": ["m1"], "k": "ten"}, "valid integer"),
    ({"history": ["m1"], "colour": "red"}, "Extra inputs"),
    ({"k": 3}, "Field required"),
    ({"history": ["m1"], "where": {"colour": "red"}}, "'colour' is unknown"),
    ({"history": ["m1"], "exclude": "everything"}, "exclude"),
    ({"history": ["m1"], "allow": ["nope"]}, "'nope'"),
    ({"history": ["m1"], "k": 5, "num_beams": 2}, "num_beams"),
    ([1, 2, 3], "valid dictionary"),
])
def test_bad_bodies_are_422_with_a_clear_message(client, body, needle):
    r = client.post("/recommend", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_malformed_json_is_422(client):
    r = client.post("/recommend", content=b'{"history": ["m1",', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.text
    r = client.post("/recommend", content=b"", headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post("/recommend", content=b"\xff\xfe{", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.text
    form = {"content-type": "application/x-www-form-urlencoded"}
    r = client.post("/recommend", content=b"history=m1", headers=form)
    assert r.status_code == 422
    assert client.get("/nowhere").status_code == 404


def test_unknown_ids_are_named_in_the_detail(client):
    d = client.post("/recommend", json={"history": ["m1", "x9"]}).json()["detail"][0]
    assert d["loc"] == ["body", "history"] and d["input"] == ["x9"] and "x9" in d["msg"]


def test_concurrent_requests_are_micro_batched_and_equal_unbatched(rec):
    sizes = []
    app = create_app(rec, max_batch=16, max_wait_ms=300, on_batch=sizes.append)
    bodies = [{"history": [f"m{i}", f"m{(i * 5) % 24}"], "k": 4 + i % 3} for i in range(10)]
    bodies += [{"history": ["m2"], "k": 3, "exclude": "history", "where": {"categories": ["Action", "Drama"]}}]

    async def fire():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return await asyncio.gather(*(c.post("/recommend", json=b) for b in bodies))

    try:
        responses = asyncio.run(fire())
    finally:
        app.state.batcher.close()
    assert max(sizes) > 1 and sum(sizes) == len(bodies)
    for b, r in zip(bodies, responses):
        assert r.status_code == 200
        want = rec.recommend(**b)
        got = r.json()["items"]
        assert [x["item_id"] for x in got] == [w.item_id for w in want]
        assert np.allclose([x["score"] for x in got], [w.score for w in want], atol=1e-4)


def test_a_failing_batch_is_retried_per_request():
    from genrec.inference.http import MicroBatcher

    def fn(xs):
        if "bad" in xs:
            raise ValueError("boom")
        return [x.upper() for x in xs]

    sizes = []
    b = MicroBatcher(fn, max_batch=8, max_wait_ms=200, on_batch=sizes.append)
    futs = [b.submit(x) for x in ("a", "bad", "c")]
    assert futs[0].result(5) == "A" and futs[2].result(5) == "C"
    with pytest.raises(ValueError, match="boom"):
        futs[1].result(5)
    b.close()
    assert sizes == [3]


def _wait_until(cond, timeout: float = 5.0) -> None:
    import time

    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_a_full_queue_rejects_at_once_and_recovers():
    import threading

    from genrec.inference.http import MicroBatcher, Overloaded

    gate = threading.Event()
    b = MicroBatcher(lambda xs: (gate.wait(5), [x * 2 for x in xs])[1], max_batch=1, max_wait_ms=0, max_queue=2)
    first = b.submit(1)
    _wait_until(lambda: b.queued == 0)  # the worker holds it, blocked on the gate
    waiting = [b.submit(2), b.submit(3)]
    with pytest.raises(Overloaded, match="max_queue=2"):
        b.submit(4)
    assert b.rejected == 1 and b.queued == 2
    gate.set()
    assert [f.result(5) for f in (first, *waiting)] == [2, 4, 6]
    assert b.submit(5).result(5) == 10  # accepting again once drained
    b.close()


def test_overload_is_503_with_retry_after(rec):
    import threading

    app = create_app(rec, max_batch=1, max_wait_ms=0, max_queue=1)
    batcher, gate = app.state.batcher, threading.Event()
    decode = batcher.fn
    batcher.fn = lambda xs: (gate.wait(5), decode(xs))[1]
    prepared = rec.prepare({"history": ["m1"], "k": 3})
    with TestClient(app) as c:
        held = batcher.submit(prepared)
        _wait_until(lambda: batcher.queued == 0)
        queued = batcher.submit(prepared)
        r = c.post("/recommend", json={"history": ["m2"], "k": 3})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["detail"][0]["type"] == "overloaded" and "--max-queue" in r.text
        h = c.get("/health").json()
        assert (h["queued"], h["rejected"]) == (1, 1)
        gate.set()
        assert len(held.result(10)) == 3 and len(queued.result(10)) == 3
        assert c.post("/recommend", json={"history": ["m2"], "k": 3}).status_code == 200
