"""Serving over HTTP: the Open Inference Protocol (v2) app (``http``), its JSON answers and
error mapping (``responses``), the v2 tensor codec (``v2``), the in-agent update route
(``update_route``) and the uvicorn process (``server``). The request window and batching are
the agent's own (``device_agent.agent``).

Importing this package imports nothing heavy; the HTTP app (Starlette) is in ``serving.http``.
"""
