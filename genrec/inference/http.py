"""``genrec serve``: an HTTP API over :class:`~genrec.inference.recommender.GenRecommender` (FastAPI).

Endpoints (OpenAPI docs at ``/docs``, schema at ``/openapi.json``):

- ``POST /recommend`` — body :class:`RecommendBody`; answers ``{"items": [{"item_id", "title",
  "score"}, ...], "k": effective k, "model": run name}``.
- ``GET /health`` — ``{"status": "ok", "model", "base_model", "items", "uptime_s", "requests",
  "batches", "mean_batch", "queued", "rejected"}``.

Errors: a malformed body (bad JSON, wrong types, missing / unknown fields, ``k`` outside 1..1000,
an empty history) and a request the catalog cannot serve (unknown item ids — all named —, an
ambiguous title, an unknown filter attribute) answer **422** with FastAPI's usual
``{"detail": [{"loc", "msg", "type", ...}]}``; bad input never yields a 5xx.

Micro-batching: requests are validated on the event loop, then queued; one worker thread takes
the first queued request, waits up to ``max_wait_ms`` for more (at most ``max_batch``) and
decodes them together with one batched constrained beam search
(:meth:`GenRecommender.decode`), so concurrent clients share the model's forward passes.
A failing batch is retried request by request, so one request cannot fail its neighbours.

Back-pressure: at most ``max_queue`` requests wait for the model; one more is answered **503**
with a ``Retry-After`` header at once instead of queueing without bound (clients retry, load
balancers move on). ``/health`` reports the current queue length.
"""

import argparse
import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from genrec.errors import ConfigError, GenrecError, RequestError

try:
    from fastapi import FastAPI, Request
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.responses import JSONResponse, RedirectResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
    from starlette.exceptions import HTTPException
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ConfigError(f"genrec serve needs fastapi and uvicorn: pip install 'genrec[serving]' ({e})") from None

log = logging.getLogger(__name__)

ItemRef = StrictStr | StrictInt


class RecommendBody(BaseModel):
    """A recommendation request (the fields of :meth:`GenRecommender.recommend`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"history": ["m1", "m5", "m7"], "k": 10, "exclude": "history"},
        {"history": ["m1"], "k": 5, "where": {"categories": "Comedy"}}]})

    history: list[ItemRef] = Field(..., min_length=1, max_length=10_000,
                                   description="item ids (or exact titles), oldest first; the most recent "
                                               "max_history items are used")
    k: StrictInt = Field(10, ge=1, le=1000, description="how many items (clamped to the catalog size)")
    exclude: Literal["history"] | list[ItemRef] | None = Field(
        None, description='"history" to drop the history\'s items, or a list of item ids; default: none')
    allow: list[ItemRef] | None = Field(None, max_length=1_000_000, description="recommend only these items")
    where: dict[str, Any] | None = Field(None, description='attribute conditions, e.g. {"categories": "Comedy"}')
    instruction: str | None = Field(None, max_length=4000, description="custom prompt text ({history} = indices)")
    num_beams: StrictInt | None = Field(None, ge=1, le=1000, description="beam width (default max(20, k))")


class ItemOut(BaseModel):
    item_id: str
    title: str
    score: float = Field(description="log P(item, EOS | prompt); higher is better")


class RecommendResponse(BaseModel):
    items: list[ItemOut]
    k: int = Field(description="k after clamping to the catalog size")
    model: str


class HealthResponse(BaseModel):
    status: str
    model: str
    base_model: str
    items: int
    uptime_s: float
    requests: int
    batches: int
    mean_batch: float
    queued: int
    rejected: int


class Overloaded(RuntimeError):
    """The batcher's queue is full: the request was not accepted (HTTP 503)."""


_STOP = object()


class MicroBatcher:
    """Queue items from any thread; a worker thread calls ``fn(list_of_items) -> list_of_results``
    on batches of up to ``max_batch`` items gathered within ``max_wait_ms`` of the first one.

    At most ``max_queue`` items wait (0: no limit); :meth:`submit` raises :class:`Overloaded` beyond.
    ``on_batch(size)`` is called after every batch (metrics, tests). Started on first use.
    """

    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_batch: int = 16, max_wait_ms: float = 10.0,
                 on_batch: Callable[[int], None] | None = None, max_queue: int = 0) -> None:
        if max_batch < 1 or max_wait_ms < 0 or max_queue < 0:
            raise ConfigError(f"max_batch must be >= 1, max_wait_ms >= 0 and max_queue >= 0 (0: unbounded), "
                              f"got {max_batch}, {max_wait_ms}, {max_queue}")
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait_ms / 1000.0
        self.on_batch = on_batch
        self.max_queue = max_queue
        self.requests = self.batches = self.rejected = 0
        self._q: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, item: Any) -> concurrent.futures.Future:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="genrec-batcher", daemon=True)
                    self._thread.start()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self.max_queue and self._q.qsize() >= self.max_queue:
                self.rejected += 1
                raise Overloaded(f"{self._q.qsize()} requests are already waiting (max_queue={self.max_queue})")
            self._q.put((item, fut))
        return fut

    @property
    def queued(self) -> int:
        """Requests waiting for the model (not counting the batch being decoded)."""
        return self._q.qsize()

    def close(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._q.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            first = self._q.get()
            if first is _STOP:
                return
            batch, stop = [first], False
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    nxt = self._q.get(timeout=left) if left > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._run(batch)
            if stop:
                return

    def _run(self, batch: list[tuple[Any, concurrent.futures.Future]]) -> None:
        live = [(x, f) for x, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self.fn([x for x, _ in live])
            for (_, f), r in zip(live, results):
                f.set_result(r)
        except Exception as e:  # noqa: BLE001 - isolate the culprit, then report per request
            if len(live) == 1:
                live[0][1].set_exception(e)
            else:
                log.warning("batch of %d failed (%s); retrying its requests one by one", len(live), e)
                for x, f in live:
                    try:
                        f.set_result(self.fn([x])[0])
                    except Exception as e1:  # noqa: BLE001
                        f.set_exception(e1)
        self.requests += len(live)
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(len(live))


def _unprocessable(e: GenrecError) -> JSONResponse:
    field = getattr(e, "field", None)
    detail = {"loc": ["body", field] if field else ["body"], "msg": str(e), "type": "request_error"}
    values = getattr(e, "values", None)
    if values:
        detail["input"] = [v if isinstance(v, (str, int, float, bool)) or v is None else str(v) for v in values]
    return JSONResponse(status_code=422, content={"detail": [detail]})


def create_app(recommender: Any, max_batch: int = 16, max_wait_ms: float = 10.0,
               on_batch: Callable[[int], None] | None = None, max_queue: int = 256) -> FastAPI:
    """The FastAPI app serving ``recommender`` (a :class:`~genrec.inference.recommender.GenRecommender`).

    Testable without a socket (``fastapi.testclient.TestClient`` or ``httpx.ASGITransport``).
    ``app.state.batcher`` is the :class:`MicroBatcher`; ``on_batch(size)`` observes batch sizes;
    more than ``max_queue`` waiting requests (0: no limit) are answered 503.
    """
    from genrec.inference.recommender import RecommendRequest

    batcher = MicroBatcher(recommender.decode, max_batch, max_wait_ms, on_batch, max_queue=max_queue)
    started = time.monotonic()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        batcher.close()

    app = FastAPI(title="genrec", summary="Generative LLM recommender: constrained decoding of item indices",
                  description=__doc__, lifespan=lifespan)
    app.state.recommender, app.state.batcher = recommender, batcher
    name = recommender.name or "model"

    @app.exception_handler(HTTPException)
    async def body_errors(request: Request, exc: HTTPException) -> Any:
        # FastAPI answers 400 for a body it cannot even decode (e.g. invalid UTF-8), 422 for bad
        # JSON; one status for "malformed body" is simpler for clients.
        if exc.status_code == 400 and request.url.path == "/recommend":
            return JSONResponse(status_code=422, content={"detail": [{
                "loc": ["body"], "msg": "the body is not valid JSON (UTF-8 encoded)", "type": "json_invalid"}]})
        return await http_exception_handler(request, exc)

    @app.post("/recommend", response_model=RecommendResponse,
              responses={422: {"description": "invalid body, unknown item ids or filter attributes"},
                         503: {"description": "too many requests waiting; retry after the Retry-After seconds"}})
    async def recommend(body: RecommendBody) -> Any:
        """Top-k items for a history, best first (constrained beam search over the catalog)."""
        exclude = body.exclude if body.exclude is None or isinstance(body.exclude, str) \
            else [str(x) for x in body.exclude]
        req = RecommendRequest(history=[str(h) for h in body.history], k=body.k, exclude=exclude,
                               allow=None if body.allow is None else [str(x) for x in body.allow],
                               where=body.where, instruction=body.instruction, num_beams=body.num_beams)
        try:
            prepared = recommender.prepare(req)
        except GenrecError as e:
            return _unprocessable(e)
        try:
            fut = batcher.submit(prepared)
        except Overloaded as e:
            return JSONResponse(status_code=503, headers={"Retry-After": "1"}, content={"detail": [{
                "loc": [], "msg": f"the server is overloaded: {e}; retry shortly or raise --max-queue",
                "type": "overloaded"}]})
        try:
            recs = await asyncio.wrap_future(fut)
        except RequestError as e:
            return _unprocessable(e)
        return {"items": [r.to_dict() for r in recs], "k": prepared.k, "model": name}

    @app.get("/health", response_model=HealthResponse)
    async def health() -> Any:
        """Liveness and a few counters."""
        return {"status": "ok", "model": name, "base_model": str(recommender.base_model),
                "items": recommender.num_items, "uptime_s": round(time.monotonic() - started, 3),
                "requests": batcher.requests, "batches": batcher.batches,
                "mean_batch": round(batcher.requests / batcher.batches, 3) if batcher.batches else 0.0,
                "queued": batcher.queued, "rejected": batcher.rejected}

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    return app


def main(args: argparse.Namespace) -> int:
    """``genrec serve``."""
    import uvicorn

    from genrec.inference.recommender import GenRecommender
    from genrec.runtime import set_threads

    set_threads(args.threads)
    rec = GenRecommender.from_pretrained(args.model, device=args.device, data_dir=args.data,
                                         num_beams=args.num_beams, scoring=args.scoring,
                                         item_head=not args.no_item_head)
    rec.recommend([rec.items[0].item_id], k=1)  # warm-up: the first forward pass is the slow one
    app = create_app(rec, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue)
    log.info("serving %s on http://%s:%d (docs at /docs)", rec.name, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
