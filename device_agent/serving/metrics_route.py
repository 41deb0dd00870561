"""``GET /metrics``: the agent's Prometheus endpoint (text exposition made by prometheus_client).

Readable without the control token (it reveals counts and the served model's name, version and
hash, nothing that changes the device), served on the HTTP API's own address and port, and
absent when ``serving.metrics_enabled`` is false. Families: :mod:`device_agent.monitoring.collector`.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PATH = "/metrics"


def metrics_route(collector_registry: Any) -> Route:
    """The route serving ``collector_registry`` (a prometheus_client CollectorRegistry)."""
    from prometheus_client import generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4  # what Prometheus 2.x negotiates

    async def metrics(request: Request) -> Response:
        # generated in a worker thread: a scrape also reads the telemetry queue (SQLite, behind
        # the writer's lock), /proc and the thermal zones, which must not stall inference
        body = await run_in_threadpool(generate_latest, collector_registry)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return Route(PATH, metrics, methods=["GET"])
