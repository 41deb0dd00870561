"""The device-side core used directly (no toolchain): run_cell in-process, CPU pinning, fingerprint."""

import os

import pytest

from runtime.bench.cell import run_cell
from runtime.bench.fingerprint import describe_int8_hardware, host_fingerprint, int8_features, parse_cpuinfo
from runtime.bench.spec import CellSpec, RunLength

SHORT = RunLength(warmup_min_iters=2, warmup_min_s=0.0, min_iters=70, min_duration_s=0.02, max_duration_s=5.0)


def test_run_cell_in_process_on_ort(tiny_onnx, tmp_path):
    spec = CellSpec(cell_id="c", model_path=str(tiny_onnx), engine="onnxruntime", threads=1, batch=3,
                    run_length=SHORT, samples_path=str(tmp_path / "s.npy"), input_seed=5)
    res = run_cell(spec)
    assert res["status"] == "ok" and res["scenario"] == "throughput" and res["batch"] == 3
    assert res["inputs"]["source"] == "random" and res["inputs"]["seed"] == 5
    assert res["stats"]["count"] >= 70 and (tmp_path / "s.npy").exists()
    assert res["memory"]["peak_rss_bytes"] >= res["memory"]["rss_before_load_bytes"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_pinning_is_applied_and_recorded(tiny_onnx, tmp_path):
    from toolchain.bench import api

    before = os.sched_getaffinity(0)
    cpu = max(before)
    cfg = api.make_config(threads=(1,), pin=str(cpu), run_length=SHORT)
    res = api.bench(tiny_onnx, config=cfg, out_dir=tmp_path, progress=None)
    cell = res["cells"][0]
    assert cell["status"] == "ok" and cell["pinned"] is True and cell["cpu_affinity"] == [cpu]
    assert os.sched_getaffinity(0) == before  # only the cell process was pinned


def test_parse_cpuinfo_x86_and_arm():
    x86 = parse_cpuinfo("model name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile amx_int8\n")
    assert x86["cpu_model"] == "Some Xeon" and x86["isa_x86"]["avx512_vnni"] and x86["isa_x86"]["amx_int8"]
    assert int8_features(x86) == {"vnni": True, "amx": True, "arm_dotprod": False, "arm_i8mm": False}
    arm = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd0b\n")
    assert arm["isa_arm"]["dotprod"] and arm["isa_arm"]["i8mm"] and not arm["isa_x86"]["avx2"]
    old = parse_cpuinfo("model name\t: Old Core\nflags\t\t: sse4_2 avx avx2\n")
    assert "no int8 dot-product" in describe_int8_hardware({**old, "machine": "x86_64"})


def test_host_fingerprint_has_the_deciding_facts():
    fp = host_fingerprint()
    for k in ("cpu_model", "isa_x86", "isa_arm", "logical_cpus", "os", "kernel", "python", "load_avg"):
        assert k in fp
