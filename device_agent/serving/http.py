"""The HTTP API: Open Inference Protocol (KServe v2) over Starlette, plus a local control API.

Routes (v2):  GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/{v}],
              GET .../ready, POST .../infer
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
import time

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
from .responses import error_response, http_exception, json_response, map_error
from .v2 import PLATFORM, V2Error, infer_response, parse_infer_request, tensor_metadata


class _V2Handlers:
    """The route handlers, bound to one agent."""

    def __init__(self, agent: Agent, limit: int, control_token: str | None) -> None:
        self.agent, self.limit, self.token = agent, limit, control_token
        self.inline_below_s = agent.config.serving.inline_below_ms / 1e3

    async def server_meta(self, request: Request) -> Response:
        return json_response({"name": "edgeship-agent", "version": __version__, "extensions": []})

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        return json_response({"ready": self.agent.ready}, 200 if self.agent.ready else 503)

    def current(self, request: Request):
        """The loaded model if it is the one the path names. Raises V2Error 404/503."""
        name = request.path_params["name"]
        cur = self.agent.current()
        if cur is None:
            raise self.agent.not_ready_error()
        version = request.path_params.get("version")
        if name != cur.ref.name or (version is not None and version not in (cur.ref.version, str(cur.ref.release))):
            raise V2Error(404, f"model {name!r}" + (f" version {version!r}" if version else "")
                          + f" is not served here; serving {cur.ref.name!r} version {cur.ref.version}")
        return cur

    async def model_meta(self, request: Request) -> Response:
        cur = self.current(request)
        return json_response({"name": cur.ref.name, "versions": [cur.ref.version],
                      "platform": PLATFORM.get(cur.ref.engine, cur.ref.engine),
                      "inputs": tensor_metadata(cur.session.inputs),
                      "outputs": tensor_metadata(cur.session.outputs),
                      "parameters": {"sha256": cur.ref.sha256, "release": cur.ref.release,
                                     "precision": cur.ref.precision}})

    async def model_ready(self, request: Request) -> Response:
        self.current(request)
        return json_response({"name": request.path_params["name"], "ready": True})

    async def infer(self, request: Request) -> Response:
        cur = self.current(request)
        body = await _read_body(request, self.limit)
        feeds, requested, rid = parse_infer_request(body, cur.session.inputs)
        # the model that really ran (a switch may land between the check above and the run)
        name = request.path_params["name"]
        avg = cur.avg_latency_s
        if avg is not None and avg < self.inline_below_s and not self.agent.batching:
            out, ref = self.agent.infer_traced(feeds, name)  # a fast model: skip the thread hop
        else:
            out, ref = await run_in_threadpool(self.agent.infer_traced, feeds, name)
        return json_response(infer_response(model_name=ref.name, model_version=ref.version, outputs=out,
                                    requested=requested, request_id=rid))

    async def ctl_status(self, request: Request) -> Response:
        return json_response({**self.agent.status(), "metrics": self.agent.metrics_snapshot()})

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


def _endpoint(fn):
    async def handler(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as e:  # every failure becomes one JSON answer; the server keeps going
            return map_error(request, e)
    return handler


def create_app(agent: Agent, *, max_body_bytes: int | None = None, control_token: str | None = None,
               updates=None, metrics_registry=None) -> Starlette:
    """The ASGI app serving ``agent``. Control routes exist only when ``control_token`` is set.

    ``updates`` (an :class:`~.update_route.UpdateHost`) serves POST /edgeship/v1/update;
    ``metrics_registry`` (a prometheus_client registry) serves GET /metrics (:mod:`.metrics_route`).
    """
    h = _V2Handlers(agent, max_body_bytes if max_body_bytes is not None else agent.config.serving.max_body_bytes,
                    control_token)
    routes = [Route("/v2", _endpoint(h.server_meta)), Route("/v2/health/live", _endpoint(h.live)),
              Route("/v2/health/ready", _endpoint(h.ready))]
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [Route(base, _endpoint(h.model_meta)), Route(base + "/ready", _endpoint(h.model_ready)),
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
