"""Run the agent in the foreground: uvicorn serving the v2 app, one agent per state dir.

While running, the process holds ``<state_dir>/agent.lock`` and advertises itself in
``agent.json`` and ``control.token`` (:mod:`device_agent.agent.process`).

OTA updates (``device_agent.ota``) and MQTT telemetry (``device_agent.mqtt``) are
started after the agent when configured (see :func:`_start_extensions`) and stopped first.

Signals: SIGTERM / SIGINT stop accepting, let requests in flight finish (uvicorn's graceful
shutdown), close the sessions and exit 0. SIGHUP re-reads the store's pointers (after an
offline ``edgeship-agent rollback`` or another tool switched them).

Under systemd (``Type=notify``, :mod:`..sdnotify`): ``READY=1`` once the socket listens and
the model is loaded, ``WATCHDOG=1`` from uvicorn's serving loop (every 0.1 s tick checks
whether a ping is due), ``STOPPING=1`` at shutdown. Connections are guarded by
:mod:`.connections` (header/body read timeouts, a cap below the open-file limit, whose soft
value is raised to the hard one first). gRPC (:mod:`.oip_grpc`) starts when
``[serving] grpc_port`` is set, beside HTTP and sharing its :class:`~.service.InferenceService`.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

from runtime.contracts.statedir import StateDir

from ..agent.process import advertise, instance_lock, new_control_token, withdraw
from ..config import AgentConfig
from ..logs import configure, get_logger
from ..sdnotify import Watchdog, notify, watchdog_interval_s

log = get_logger("server")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP; without it Nagle + delayed ACK add ~40 ms per keep-alive response
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run(config: AgentConfig) -> int:
    """Serve until SIGTERM/SIGINT. Returns the exit code.

    Raises:
        AlreadyRunningError: another agent holds the state dir.
        OSError: the port cannot be bound (the message names host and port).
    """
    import uvicorn

    from ..agent.core import Agent
    from ..monitoring.startup import start_monitoring
    from .connections import Guard, Limits, raise_open_file_limit
    from .http import create_app
    from .service import InferenceService
    from .update_route import UpdateHost

    configure(level=config.agent.log_level.value, file=config.agent.log_file or None)
    root = config.state_dir
    paths = StateDir(root)
    with instance_lock(root):
        s = config.serving
        try:
            sock = _bind(s.host, s.port)
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {s.host}:{s.port}: {e.strerror}") from e
        port = sock.getsockname()[1]
        nofile = raise_open_file_limit()
        guard = Guard(Limits(header_timeout_s=s.header_timeout_s, body_timeout_s=s.body_timeout_s,
                             max_connections=s.max_connections))
        token = new_control_token(paths) if s.control_enabled else None
        agent = Agent(config)
        service = InferenceService(agent)
        updates = UpdateHost(config, agent)
        monitoring = start_monitoring(config, agent)
        app = create_app(agent, control_token=token, updates=updates, service=service,
                         metrics_registry=monitoring.registry, drift=monitoring.drift)
        try:
            capture = _start_capture(config, agent, monitoring)
            stop_grpc, grpc_port = _start_grpc(config, service)
        except Exception:
            agent.close()
            raise
        server = _Server(updates, uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", server_header=False,
            http=_protocol(guard), timeout_keep_alive=max(1, int(s.keep_alive_s)),
            timeout_graceful_shutdown=max(1, int(s.drain_timeout_s))))
        stop_signals: list[int] = []
        previous = {sig: signal.signal(sig, lambda signum, _f: stop_signals.append(signum))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        # uvicorn handles SIGTERM/SIGINT while serving (graceful shutdown) and re-raises the
        # signal afterwards to the handler installed before it: the recorder above, so the
        # cleanup below runs and the exit code is 0.
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
            target=_reload, args=(agent,), daemon=True).start())
        stoppers = [stop_grpc, updates.cancel, monitoring.stop, *([capture.stop] if capture else []),
                    *_start_extensions(config, agent, updates, monitoring, capture=capture)]
        advertise(paths, host=s.host, port=port)
        log.info("agent.started", host=s.host, port=port, grpc_port=grpc_port, pid=os.getpid(),
                 ready=agent.ready, model=(agent.current().ref.name if agent.current() else None),
                 max_connections=guard.cap, nofile=nofile[1])
        try:
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for stop_fn in reversed(stoppers):
                _quietly(stop_fn, "extension.stop_failed")
            agent.close()
            sock.close()
            withdraw(paths)
            log.info("agent.stopped", pid=os.getpid(), signal=stop_signals[0] if stop_signals else None)
    return 0


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server that, when shutdown begins, first asks a running update to stop:
        an update streaming its events to a client (POST /edgeship/v1/update) would otherwise
        hold the graceful shutdown for the whole trial window."""

        def __init__(self, updates, config) -> None:
            super().__init__(config)
            self._updates = updates
            self._watchdog = Watchdog(watchdog_interval_s())

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                notify("READY=1\nSTATUS=serving")

        async def on_tick(self, counter: int) -> bool:
            self._watchdog.tick()  # on the serving loop: a hung loop stops the pings
            return await super().on_tick(counter)

        async def shutdown(self, sockets=None) -> None:
            notify("STOPPING=1")
            self._updates.request_cancel()
            await super().shutdown(sockets=sockets)

    return Server


def _Server(updates, config):  # noqa: N802 - a class made on first use (uvicorn is imported lazily)
    return _server_class()(updates, config)


def _protocol(guard):
    """The guarded httptools protocol (header/body timeouts, the connection cap).

    Raises:
        AgentError: httptools is missing (it is in the agent extra).
    """
    try:
        from .connections import protocol_class

        return protocol_class(guard)
    except ImportError as e:
        from ..agent.errors import AgentError

        raise AgentError(f"the HTTP server needs httptools for its read timeouts: {e}; "
                         f"pip install 'edgeship[agent]'") from e


def _start_grpc(config: AgentConfig, service) -> tuple:
    """Start gRPC when ``[serving] grpc_port`` is set; ``(stop, port or None)``.

    Raises:
        GrpcUnavailableError, OSError: from :func:`.oip_grpc.start_grpc`.
    """
    s = config.serving
    if not s.grpc_port:
        return (lambda: None), None
    from .oip_grpc import start_grpc

    port, stop = start_grpc(service, host=s.host, port=s.grpc_port, max_message_bytes=s.max_body_bytes)
    return stop, port


def _start_capture(config: AgentConfig, agent, monitoring=None):
    """Capture when ``[capture] enabled`` (a handle with ``stop``), else None.

    Raises:
        ConfigError: the redaction hook does not load: the agent does not start rather than
            capture unredacted.
    """
    if "capture" not in config.extensions:
        return None
    from ..capture.startup import attach_drift, start_capture

    handle = start_capture(config, agent)
    if handle is not None and monitoring is not None and monitoring.drift is not None:
        attach_drift(handle, monitoring.drift)  # drift alarms capture the calls that moved the score
    return handle


def _start_extensions(config: AgentConfig, agent, updates=None, monitoring=None, *, capture=None) -> list:
    """Start OTA updates and MQTT telemetry when configured; return their stop callables.

    Updates start when ``[update]`` is in the config or an update journal exists (an update
    interrupted by a crash is recovered at start either way); their Updater is the one the
    control route (``updates``, an UpdateHost) and MQTT use, so only one update runs at a
    time. Telemetry starts when ``[mqtt]`` is in the config, before polling, so every
    update polling runs and every release it skips is reported on MQTT. A failure to start
    one is logged; serving goes on.
    """
    stoppers: list = []
    updater = svc = None
    wants_updates = "update" in config.extensions or StateDir(config.state_dir).journal.exists()
    if wants_updates:
        try:
            from ..ota.updater import Updater

            updater = Updater(config, agent.store, agent)
        except Exception as e:  # serving must go on; the error is visible in the log
            log.error("update.start_failed", error=f"{type(e).__name__}: {e}")
    if "mqtt" in config.extensions:
        try:
            from .. import mqtt

            svc = mqtt.start(config, agent, updater, capture_store=capture.store if capture else None)
            stoppers.append(svc.stop)
            if monitoring is not None:
                from ..monitoring.startup import attach_telemetry

                attach_telemetry(monitoring, svc)
            if capture is not None:
                from ..capture.startup import attach_telemetry as attach_capture_telemetry

                attach_capture_telemetry(capture, svc)
        except Exception as e:
            log.error("telemetry.start_failed", error=f"{type(e).__name__}: {e}")
    if updater is not None:
        try:
            from ..ota.poll import start_updates

            poller = start_updates(config, agent, updater=updater,
                                   on_event=svc.report_update_event if svc else None,
                                   on_skip=svc.report_skip if svc else None)
            if updates is not None:
                updates.set(updater)
            stoppers.append(poller.stop)  # stopped first (reversed order): telemetry then reports its end
        except Exception as e:
            log.error("update.start_failed", error=f"{type(e).__name__}: {e}")
    return stoppers


def _quietly(fn, event: str) -> None:
    try:
        fn()
    except Exception as e:  # shutting down: log and go on closing the rest
        log.error(event, error=f"{type(e).__name__}: {e}")


def _reload(agent) -> None:
    try:
        agent.reload_pointers()
    except Exception as e:  # a bad pointer must not kill the server; it is logged
        log.error("agent.reload_failed", error=str(e))
