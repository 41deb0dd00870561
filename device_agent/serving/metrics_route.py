"""``GET /metrics``: the agent's Prometheus endpoint (text exposition made by prometheus_client).

Readable without the control token (it reveals counts and the served model's name, version and
hash, nothing that changes the device), served on the HTTP API's own address and port, and
absent when ``serving.metrics_enabled`` is false. Families: :mod:`device_agent.monitoring.collector`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PATH = "/metrics"


def metrics_route(collector_registry: Any) -> Route:
    """The route serving ``collector_registry`` (a prometheus_client CollectorRegistry)."""
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4  # what Prometheus 2.x negotiates

    from ..monitoring.exposition import Exposition

    exposition = Exposition()

    async def metrics(request: Request) -> Response:
        # rendered on the event loop, not in a worker thread: a scrape reads memory only (no
        # SQLite, no file opened, no lock held longer than a copy; thermal zones, open fds and the
        # update journal are sampled off the scrape path) and takes ~0.35 ms in a running agent,
        # less than a thread hop and its GIL hand-overs cost under inference load
        # (docs/monitoring.md, "Scrape cost")
        return Response(exposition.render(collector_registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return Route(PATH, metrics, methods=["GET"])
