"""Serving: windowed request metrics, batching, and the Open Inference Protocol (v2) HTTP API.

Importing this package imports nothing heavy; the HTTP app (Starlette) is in ``serving.http``.
"""
