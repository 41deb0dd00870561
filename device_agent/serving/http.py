"""The HTTP API: Open Inference Protocol (KServe v2) over Starlette, plus a local control API.

Routes (v2):  GET /v2, /v2/health/live, /v2/health/ready, /v2/models/stats,
              GET /v2/models/{name}[/versions/{v}], GET .../ready, GET .../config, GET .../stats,
              POST .../infer, POST /v2/repository/index
              (the binary tensor data, classification, model configuration, statistics and
              repository index extensions as Triton's clients call them: :mod:`.v2`, :mod:`.catalog`)
Metrics:      GET /metrics (Prometheus; no token; :mod:`.metrics_route`)
Control:      GET /edgeship/v1/status, POST /edgeship/v1/rollback, POST /edgeship/v1/reload,
              POST /edgeship/v1/update (runs a signed update inside this process; see
              :mod:`.update_route`) (only with a token; callers send it in ``X-Edgeship-Token``)

Every error is JSON ``{"error": "..."}``: 400 malformed or mismatched request, 404 unknown
model or route, 413 body over ``max_body_bytes``, 503 not ready (with ``Retry-After`` while
the model is unloaded on purpose for an update), 500 the model raised on
valid input (that request only; the agent keeps serving). Inference runs in Starlette's
thread pool so the event loop keeps accepting requests while a model runs, except for a
model whose recent average latency is under ``serving.inline_below_ms`` (1 ms by default):
that one runs on the loop itself, which saves the ~0.1 ms thread hop and blocks the loop
no longer than parsing a request does.
"""

from __future__ import annotations

import hmac
import json
import time
import zlib

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.contracts import control

from .. import __version__
from ..agent.core import Agent
from ..store import NoPreviousModelError
from .catalog import EXTENSIONS
from .errors import V2Error
from .responses import error_response, http_exception, json_response, map_error
from .service import InferenceService
from .v2 import HEADER_LENGTH, infer_response, parse_infer_request


class _V2Handlers:
    """The route handlers, bound to one agent."""

    def __init__(self, service: InferenceService, limit: int, control_token: str | None, drift=None) -> None:
        self.service, self.agent, self.limit, self.token = service, service.agent, limit, control_token
        self.inline_below_s = self.agent.config.serving.inline_below_ms / 1e3
        self.drift = drift  # a DriftMonitor, for the status (or None)

    async def server_meta(self, request: Request) -> Response:
        return json_response({"name": "edgeship-agent", "version": __version__, "extensions": EXTENSIONS})

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        return json_response({"ready": self.agent.ready}, 200 if self.agent.ready else 503)

    @staticmethod
    def _names(request: Request) -> tuple[str, str | None]:
        return request.path_params["name"], request.path_params.get("version")

    async def model_meta(self, request: Request) -> Response:
        return json_response(self.service.metadata(*self._names(request)))

    async def model_ready(self, request: Request) -> Response:
        name, version = self._names(request)
        ok = self.service.ready(name, version)
        return json_response({"name": name, "ready": ok}, 200 if ok else 503)

    async def model_config(self, request: Request) -> Response:
        return json_response(self.service.config(*self._names(request)))

    async def model_stats(self, request: Request) -> Response:
        name, version = (request.path_params.get("name"), request.path_params.get("version"))
        return json_response({"model_stats": self.service.statistics(name, version)})

    async def repository_index(self, request: Request) -> Response:
        body = await _read_body(request, 4096)
        try:
            req = json.loads(body) if body.strip() else {}
        except ValueError as e:
            raise V2Error(400, f"repository index request is not valid JSON: {e}") from e
        if not isinstance(req, dict) or not isinstance(req.get("ready", False), bool):
            raise V2Error(400, "repository index request must be an object like {\"ready\": true}")
        return json_response(self.service.index(ready_only=req.get("ready", False)))

    async def infer(self, request: Request) -> Response:
        name, version = self._names(request)
        cur = self.service.loaded(name, version)
        body = _decoded(await _read_body(request, self.limit), request.headers.get("content-encoding"), self.limit)
        req = parse_infer_request(body, cur.session.inputs, header_length=request.headers.get(HEADER_LENGTH),
                                  model=name, version=version)
        if version is None and req.model_version is not None:
            self.service.loaded(name, req.model_version)
        avg = cur.avg_latency_s
        if avg is not None and avg < self.inline_below_s and not self.agent.batching:
            out, ref = self.service.run(req.feeds, name, expected=req.expected)  # a fast model: no thread hop
        else:
            out, ref = await run_in_threadpool(self.service.run, req.feeds, name, expected=req.expected)
        header, chunks = infer_response(model_name=ref.name, model_version=ref.version, outputs=out, request=req)
        return _infer_answer(header, chunks)

    async def ctl_status(self, request: Request) -> Response:
        cap = self.agent.capture
        return json_response({**self.agent.status(), "metrics": self.agent.metrics_snapshot(),
                              "capture": cap.stats() if cap is not None else None,
                              "drift": self.drift.status_json() if self.drift is not None else None})

    async def ctl_rollback(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            ref = await run_in_threadpool(self.agent.rollback)
        except NoPreviousModelError as e:
            return error_response(409, str(e))
        return json_response({"active": ref.to_json(), "switch_s": round(time.perf_counter() - t0, 6)})

    async def ctl_reload(self, request: Request) -> Response:
        ref = await run_in_threadpool(self.agent.reload_pointers)
        return json_response({"active": ref.to_json() if ref else None})

    def guarded(self, fn):
        async def handler(request: Request) -> Response:
            got = request.headers.get(control.TOKEN_HEADER, "")
            if not self.token or not hmac.compare_digest(got.encode(), self.token.encode()):
                return error_response(403, f"missing or wrong {control.TOKEN_HEADER.lower()} header "
                                   f"(see <state_dir>/control.token)")
            return await fn(request)
        return handler


def _infer_answer(header: dict, chunks: list[bytes]) -> Response:
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if not chunks:
        return Response(head, media_type="application/json")
    return Response(b"".join([head, *chunks]), media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(len(head))})


def _endpoint(fn):
    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as e:  # every failure becomes one JSON answer; the server keeps going
            return map_error(request, e)
    return handler


def create_app(agent: Agent, *, max_body_bytes: int | None = None, control_token: str | None = None,
               updates=None, service: InferenceService | None = None, metrics_registry=None,
               drift=None) -> Starlette:
    """The ASGI app serving ``agent``. Control routes exist only when ``control_token`` is set.

    ``updates`` (an :class:`~.update_route.UpdateHost`) serves POST /edgeship/v1/update;
    ``service`` is shared with the gRPC server so both count the same statistics;
    ``metrics_registry`` (a prometheus_client registry) serves GET /metrics (:mod:`.metrics_route`);
    ``drift`` (a :class:`~device_agent.monitoring.drift.DriftMonitor`) adds its state to the status.
    """
    h = _V2Handlers(service if service is not None else InferenceService(agent),
                    max_body_bytes if max_body_bytes is not None else agent.config.serving.max_body_bytes,
                    control_token, drift)
    routes = [Route("/v2", _endpoint(h.server_meta)), Route("/v2/health/live", _endpoint(h.live)),
              Route("/v2/health/ready", _endpoint(h.ready)), Route("/v2/models/stats", _endpoint(h.model_stats)),
              Route("/v2/repository/index", _endpoint(h.repository_index), methods=["POST"])]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(base, _endpoint(h.model_meta)), Route(base + "/ready", _endpoint(h.model_ready)),
                   Route(base + "/config", _endpoint(h.model_config)),
                   Route(base + "/stats", _endpoint(h.model_stats)),
                   Route(base + "/infer", _endpoint(h.infer), methods=["POST"])]
    if metrics_registry is not None:
        from .metrics_route import metrics_route

        routes.append(metrics_route(metrics_registry))
    if control_token:
        routes += [Route(control.STATUS, _endpoint(h.guarded(h.ctl_status))),
                   Route(control.ROLLBACK, _endpoint(h.guarded(h.ctl_rollback)), methods=["POST"]),
                   Route(control.RELOAD, _endpoint(h.guarded(h.ctl_reload)), methods=["POST"])]
        if updates is not None:
            from .update_route import update_endpoint

            routes.append(Route(control.UPDATE, _endpoint(h.guarded(update_endpoint(updates))), methods=["POST"]))
    return Starlette(routes=routes, exception_handlers={HTTPException: http_exception})


def _decoded(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body after its Content-Encoding (gzip and deflate, as tritonclient may send), still
    held to ``limit`` once inflated. Raises V2Error 400/413."""
    enc = (encoding or "identity").strip().lower()
    if enc == "identity":
        return body
    if enc not in ("gzip", "deflate"):
        raise V2Error(400, f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    d = zlib.decompressobj(31 if enc == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise V2Error(400, f"request body is not valid {enc} data: {e}") from e
    if len(out) > limit or d.unconsumed_tail:
        raise V2Error(413, f"request body inflates to over the limit of {limit} bytes")
    return out


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise V2Error(413, f"request body of {declared} bytes is over the limit of {limit} bytes")
        except ValueError:
            raise V2Error(400, "invalid Content-Length") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise V2Error(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
