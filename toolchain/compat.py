"""Every torch / onnx / onnxruntime version quirk the toolchain depends on, in one place.

Nothing heavy is imported at module level. Callers use these functions instead of reaching
into private exporter internals themselves, so a new torch release is fixed here once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import re
import warnings
from typing import Any, Iterator

#: loggers whose chatter (torchvision skips, graph dumps, symbolic-shape hints) we silence
_NOISY_LOGGERS = ("torch.onnx", "torch.fx", "torch._dynamo", "torch.export", "torch._export", "torch.utils._sympy", "onnxscript")


@contextlib.contextmanager
def quiet_torch() -> Iterator[io.StringIO]:
    """Silence exporter logs/warnings/prints; yields the captured text (for error context)."""
    buf = io.StringIO()
    saved = {}
    for name in _NOISY_LOGGERS:
        lg = logging.getLogger(name)
        saved[name] = lg.level
        lg.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def onnx_export(
    model: Any,
    args: tuple,
    *,
    input_names: list[str] | None,
    output_names: list[str] | None,
    dynamic_axes: dict[str, dict[int, str]] | None,
    opset: int,
) -> Any:
    """``torch.onnx.export(dynamo=True)`` -> ``onnx.ModelProto`` (not yet saved).

    ``model`` is an ``nn.Module`` or a ``torch.export.ExportedProgram`` (whose dynamic shapes
    are already baked in, so ``dynamic_axes`` must be None for it).

    Raises: whatever the exporter raises (see :func:`classify_export_error`).
    """
    import torch

    kwargs: dict[str, Any] = {}
    if dynamic_axes:
        kwargs["dynamic_axes"] = {k: dict(v) for k, v in dynamic_axes.items()}
    program = torch.onnx.export(
        model, args, dynamo=True, opset_version=opset, input_names=input_names,
        output_names=output_names, verbose=False, external_data=True, optimize=True, **kwargs,
    )
    return program.model_proto


#: exporter step number (torch's own message "This is step N/3") -> our stage name
_STAGES = {1: "torch.export", 2: "decomposition", 3: "onnx translation"}


def classify_export_error(exc: BaseException) -> dict[str, str | None]:
    """Pull the exporter stage, the failing op/module and the user's source line out of an error.

    Returns ``{"stage", "op", "where", "summary"}`` (values may be None).
    """
    text = strip_ansi(str(exc))
    stage = None
    m = re.search(r"step (\d)/3", text)
    if m:
        stage = _STAGES.get(int(m.group(1)))
    name = type(exc).__name__
    if stage is None and name == "TorchExportError":
        stage = "torch.export"
    if stage is None and name == "ConversionError":
        stage = "onnx translation"
    op = None
    for pat in (r"No ONNX function found for <OpOverload\(op='([^']+)', overload='([^']+)'\)",
                r"call_function\[target=([\w.:]+)\]"):
        mm = re.search(pat, text)
        if mm:
            op = mm.group(1) if mm.lastindex == 1 else f"{mm.group(1)}.{mm.group(2)}"
            break
    if op is None:
        mm = re.search(r"torch\.ops\.([\w.]+)", text)
        op = mm.group(1) if mm else None
    where = None
    mm = re.search(r'The following call raised this error:\s*\n\s*File "([^"]+)", line (\d+), in (\w+)\n\s*(.+)', text)
    if mm:
        where = f"{mm.group(1)}:{mm.group(2)} in {mm.group(3)}: {mm.group(4).strip()}"
    summary = None
    mm = re.search(r"## Exception summary\s*\n+(.+?)(?:\n\n|\n\(Refer|\nCaused by|$)", text, re.S)
    if mm:
        summary = " ".join(mm.group(1).split())[:400]
    elif text:
        summary = " ".join(text.split())[:400]
    return {"stage": stage, "op": op, "where": where, "summary": summary}


def strip_ansi(s: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", s)


def load_exported_program(path: str) -> Any:
    """``torch.export.load`` (a saved ``.pt2`` program)."""
    import torch

    return torch.export.load(path)


def exported_program_example(ep: Any) -> tuple[tuple, dict]:
    """The example (args, kwargs) saved inside an ExportedProgram (torch >= 2.5), or ((), {})."""
    ex = getattr(ep, "example_inputs", None)
    if not ex:
        return (), {}
    args, kwargs = ex
    return tuple(args), dict(kwargs or {})


def exported_program_input_names(ep: Any) -> list[str]:
    """Names of the user inputs of an ExportedProgram, in order."""
    return list(ep.graph_signature.user_inputs)


def package_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def edgeship_version() -> str | None:
    """Our own version. A stale editable install can make ``toolchain`` a namespace package
    (no ``__version__``); fall back to the installed distribution's metadata then."""
    import toolchain

    return getattr(toolchain, "__version__", None) or package_version("edgeship")


def tool_versions() -> dict[str, str | None]:
    """Versions of everything that shapes an artifact (no engine is imported)."""
    return {
        "edgeship": edgeship_version(),
        "python": platform.python_version(),
        "numpy": package_version("numpy"),
        "torch": package_version("torch"),
        "onnx": package_version("onnx"),
        "onnxscript": package_version("onnxscript"),
        "onnxruntime": package_version("onnxruntime"),
        "openvino": package_version("openvino"),
        "litert_torch": package_version("litert-torch"),
        "ai_edge_litert": package_version("ai-edge-litert"),
    }


@contextlib.contextmanager
def ort_temp_dir(work_dir: Any) -> Iterator[None]:
    """Point onnxruntime.quantization's scratch files at ``work_dir``.

    ORT < 1.15 wrote ``augmented_model.onnx`` into the current directory; later versions use
    ``tempfile.TemporaryDirectory()``. Redirecting :data:`tempfile.tempdir` (and running from an
    explicit work dir path for old versions' relative names is not needed: we never chdir)
    keeps every scratch file inside the build's work dir.
    """
    import tempfile

    saved = tempfile.tempdir
    tempfile.tempdir = str(work_dir)
    try:
        yield
    finally:
        tempfile.tempdir = saved


def program_as_module(ep: Any) -> Any:
    """An ``nn.Module`` that runs an ExportedProgram and tolerates ``.eval()``.

    ``ExportedProgram.module()`` raises "Calling train() is not supported yet" on
    ``.train()/.eval()`` (torch 2.5+), which converters that start from a module call. The
    wrapper registers the graph module (so its weights stay parameters) but does not
    propagate ``train()/eval()`` into it; re-exporting the wrapper traces through the graph.
    """
    import torch

    gm = ep.module()

    class ProgramModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.program = gm

        def train(self, mode: bool = True) -> "ProgramModule":
            self.training = mode  # the exported graph is already in inference form
            return self

        def forward(self, *args):
            return self.program(*args)

    return ProgramModule().eval()


class LogCapture:
    """Where third-party output went (``path``) and the console edgeship still writes to."""

    def __init__(self, path: Any, console: Any) -> None:
        self.path = path
        self.console = console


@contextlib.contextmanager
def capture_native_logs(path: Any, *, enabled: bool = True) -> Iterator[LogCapture]:
    """Send everything third-party code writes, Python or native, to the file ``path``.

    Native libraries (oneDNN, absl, TensorFlow Lite, torchao's ``.so`` loader) write to file
    descriptors 1 and 2 directly, Python ones (warnings, tqdm weight-loading bars, print)
    to ``sys.stdout``/``sys.stderr``; both are redirected. Edgeship's own progress goes to
    ``capture.console`` (a duplicate of the original stderr). Disabled, it changes nothing
    (``--verbose``).
    """
    import os
    import sys
    from pathlib import Path

    if not enabled:
        yield LogCapture(None, sys.stderr)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    # a stderr replaced by the caller (a test's capture, a redirect) stays the console as is;
    # the process's own stderr becomes a duplicate of fd 2 taken before the redirect
    own = _fileno(sys.stderr) == 2
    console = os.fdopen(os.dup(saved[2]), "w", buffering=1) if own else sys.stderr
    log = open(path, "w", buffering=1)
    py_saved = (sys.stdout, sys.stderr)
    try:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        sys.stdout, sys.stderr = log, log
        yield LogCapture(path, console)
    finally:
        sys.stdout, sys.stderr = py_saved
        for fd, orig in saved.items():
            os.dup2(orig, fd)
            os.close(orig)
        log.close()
        if own:
            console.close()


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def pt2e_keep_float(quantizer: Any, stack_key: str) -> None:
    """Leave the module of ``nn_module_stack`` key ``stack_key`` unquantized in a litert-torch
    ``PT2EQuantizer``.

    ``set_module_name(name, None)`` asserts "quantization_config == None is not supported yet",
    although its annotation step already skips a module whose config is None; the table entry
    is set directly (what ``set_module_name`` does after its assert).
    """
    quantizer.module_name_config[pt2e_module_filter_name(stack_key)] = None


def pt2e_module_filter_name(stack_key: str) -> str:
    """The module name litert-torch's module-name filter matches for an ``nn_module_stack`` key.

    litert-torch's module-name filter (``pt2e_quantizer._get_module_name_filter``) turns each
    key into a name with ``key[len("L__self___"):].replace("_", ".")``, written for the keys of
    older torch (``L__self___blocks_sub``). torch 2.13 keys look like ``L__self__inner.features.0``,
    so the filter's name is a mangled string; passing that same mangled string matches exactly
    the nodes of that module (and of its submodules).
    """
    return stack_key[len("L__self___"):].replace("_", ".")
