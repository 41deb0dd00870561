"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), an optional extra.

Off by default; ``[serving] grpc_port`` turns it on, listening on ``[serving] host`` like
HTTP (127.0.0.1 unless configured otherwise). Needs the ``grpc`` extra (grpcio, protobuf):
``pip install 'edgeship[grpc]'``. The messages are generated from ``edgeship_oip.proto``
into the committed ``edgeship_oip_pb2.py`` (``make grpc-stubs``); the service is registered
by name (:mod:`.handlers`), so no generated service code is needed.

RPCs: ServerLive, ServerReady, ServerMetadata, ModelReady, ModelMetadata, ModelInfer, and
Triton's ModelConfig, ModelStatistics, RepositoryIndex. Others (streaming, repository
load/unload, shared memory, trace and log settings) answer UNIMPLEMENTED.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from runtime.errors import ExitCode

from ...errors import DeviceAgentError

#: worker threads of the gRPC server (each runs one request at a time)
WORKERS = 8


class GrpcUnavailableError(DeviceAgentError):
    """gRPC is configured but its extra is not installed."""

    exit_code = ExitCode.BAD_INPUT


def start_grpc(service, *, host: str, port: int, max_message_bytes: int) -> tuple[int, Callable[[], None]]:
    """Serve ``service`` (an :class:`~..service.InferenceService`) on host:port.

    Returns ``(bound port, stop)``; ``stop()`` lets running calls finish for up to 5 s.

    Raises:
        GrpcUnavailableError: grpcio or protobuf is missing (names the extra).
        OSError: the port cannot be bound (names host and port).
    """
    try:
        import grpc

        from .handlers import generic_handler
    except ImportError as e:
        raise GrpcUnavailableError(f"[serving] grpc_port = {port} needs gRPC: {e}; install the extra with "
                                   f"pip install 'edgeship[grpc]' (or set grpc_port = 0)") from e
    server = grpc.server(ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="edgeship-grpc"),
                         options=[("grpc.max_receive_message_length", max_message_bytes),
                                  ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((generic_handler(service),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        bound, why = 0, str(e)
    else:
        why = "address in use or not available"
    if not bound:
        raise OSError(f"cannot listen on {address} (gRPC): {why}")
    server.start()
    return bound, lambda: server.stop(grace=5).wait(6)
