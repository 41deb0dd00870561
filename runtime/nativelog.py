"""Route what native engine code writes to file descriptor 2 through Python logging.

Native libraries (TensorFlow Lite's "INFO: Created TensorFlow Lite XNNPACK delegate for
CPU.") write to fd 2 directly, bypassing any logger; on a device whose stderr is a JSON
log stream (journald, a shipper) such a line breaks the one-object-per-line contract.
:func:`native_stderr_to_log` redirects fd 2 to a temporary file for the duration of a block
(an engine's model load) and then logs every captured line on the logger ``name`` (INFO), so
the agent's JSON formatter writes it like any other event. Python writes to ``sys.stderr``
in the block are captured too. Process-wide: another thread writing to fd 2 meanwhile is
captured and logged as well, never lost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from typing import Iterator

_lock = threading.Lock()  # one redirect at a time: nested/parallel loads share fd 2


@contextlib.contextmanager
def native_stderr_to_log(name: str) -> Iterator[None]:
    """Capture fd 2 during the block and log each captured line on logger ``name``."""
    log = logging.getLogger(name)
    with _lock:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (a daemon without one): nothing to route
            yield
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                captured = tmp.read().decode("utf-8", "replace")
    for line in captured.splitlines():
        if line.strip():
            log.info(line.strip())
