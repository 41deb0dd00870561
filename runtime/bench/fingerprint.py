"""Environment fingerprint: the facts that decide whether two latency figures are comparable.

stdlib only (reads /proc on Linux); every field degrades to ``None`` where unavailable.
The ISA flags recorded are the ones that decide int8 and bf16 speed: AVX2, AVX-512, VNNI
(AVX-512 VNNI / AVX-VNNI), AMX, AVX-512 BF16 on x86; dotprod (asimddp), i8mm, bf16, SVE on ARM.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

#: /proc/cpuinfo flag -> our name, per architecture
_X86_FLAGS = {
    "avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16", "amx_tile": "amx_tile", "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16", "avx512_fp16": "avx512_fp16",
}
_ARM_FLAGS = {"asimddp": "dotprod", "i8mm": "i8mm", "bf16": "bf16", "sve": "sve", "asimdhp": "fp16"}

#: environment variables that change how many threads engines use
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY",
               "OMP_PROC_BIND", "TF_NUM_INTRAOP_THREADS")


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model and int8-relevant ISA flags from the text of /proc/cpuinfo (pure)."""
    model = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None and value.strip():
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    isa = {name: (flag in flags) for flag, name in _X86_FLAGS.items()}
    arm = {name: (flag in flags) for flag, name in _ARM_FLAGS.items()}
    return {"cpu_model": model, "isa_x86": isa, "isa_arm": arm}


def int8_features(fp: dict[str, Any]) -> dict[str, bool]:
    """Whether this CPU has the instructions that make int8 fast (from a fingerprint)."""
    x, a = fp.get("isa_x86") or {}, fp.get("isa_arm") or {}
    return {
        "vnni": bool(x.get("avx512_vnni") or x.get("avx_vnni")),
        "amx": bool(x.get("amx_int8")),
        "arm_dotprod": bool(a.get("dotprod")),
        "arm_i8mm": bool(a.get("i8mm")),
    }


def describe_int8_hardware(fp: dict[str, Any]) -> str:
    """One sentence on what this CPU means for int8 speed (for reports)."""
    f = int8_features(fp)
    have = [n for n, k in (("AVX-512 VNNI/AVX-VNNI", "vnni"), ("AMX", "amx"),
                           ("ARM dotprod", "arm_dotprod"), ("ARM i8mm", "arm_i8mm")) if f[k]]
    lacks = [n for n, k in (("AMX", "amx"),) if not f[k] and fp.get("machine") in ("x86_64", "AMD64")]
    cpu = fp.get("cpu_model") or "this CPU"
    if have:
        s = f"{cpu} has {', '.join(have)}, so int8 kernels are fast here and may not be on a target without them"
    else:
        s = (f"{cpu} has no int8 dot-product instructions (no VNNI/AMX/dotprod), so int8 may be "
             "no faster, or slower, than fp32 here")
    if lacks and have:
        s += f" (it has no {', '.join(lacks)}: bf16/int8 matrix tiles are not used)"
    return s + "."


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def host_fingerprint() -> dict[str, Any]:
    """Facts about this host, the OS and Python (no engine imports)."""
    info = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    if info["cpu_model"] is None:
        info["cpu_model"] = platform.processor() or None
    mem = _read("/proc/meminfo") or ""
    total_kb = next((int(l.split()[1]) for l in mem.splitlines() if l.startswith("MemTotal:")), None)
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = None
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        **info,
        "machine": platform.machine(),
        "logical_cpus": os.cpu_count(),
        "allowed_cpus": allowed,
        "mem_total_bytes": total_kb * 1024 if total_kb else None,
        "os": platform.system(),
        "kernel": platform.release(),
        "os_pretty": _os_pretty(),
        "python": platform.python_version(),
        "python_impl": sys.implementation.name,
        "virtualized": "hypervisor" in (_read("/proc/cpuinfo") or ""),
        "container": os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"),
        "cpu_governor": governor.strip() if governor else None,
        "thread_env": {k: os.environ[k] for k in _THREAD_ENV if k in os.environ},
        "load_avg": load_avg(),
    }


def load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _os_pretty() -> str | None:
    text = _read("/etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return None


def engine_versions() -> dict[str, str | None]:
    """Installed engine package versions (package metadata only; imports no engine)."""
    from ..base import engine_version
    from ..spec import Engine

    return {e.value: engine_version(e) for e in Engine}
