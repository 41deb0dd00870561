"""End to end on real tiny models: a hand-written build (ORT fp32/int8, OpenVINO IR, bad cells),
each cell in a fresh process; result JSON round-trip, reports, recommendation, exit codes."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.bench.spec import RunLength
from toolchain.bench import api, plan, result as result_mod
from toolchain.bench.errors import BenchInputError, ResultFormatError

ROOT = Path(__file__).resolve().parents[2]
#: tiny run length for tests: sub-millisecond calls; no timed assertions anywhere
TINY = RunLength(warmup_min_iters=3, warmup_min_s=0.0, min_iters=80, min_duration_s=0.05,
                 max_duration_s=5.0, cooldown_s=0.0)


@pytest.fixture(scope="module")
def bench_result(build_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    cfg = api.make_config(batches=(1, 2), threads=(1,), ov_precision="both", max_accuracy_drop=1.0,
                          run_length=TINY, seed=7)
    res = api.bench(build_dir, config=cfg, out_dir=out, progress=None)
    return res, out


def cells_by_key(res):
    return {c["key"]: c for c in res["cells"]}


def test_every_configuration_is_a_cell_and_scenarios_are_separate(bench_result):
    res, _ = bench_result
    c = cells_by_key(res)
    # 6 manifest ok/gate_failed targets x 2 batches + OpenVINO's second (f32) hint; the failed artifact skipped
    assert len(c) == 6 * 2 + 2
    assert [s["id"] for s in res["source"]["skipped"]] == ["tflite-int8"]
    for cell in res["cells"]:
        expect = "single_stream" if cell["batch"] == 1 and cell["streams"] == 1 else "throughput"
        assert cell["scenario"] == expect


def test_good_cells_measured_with_validation_inputs_and_recorded_facts(bench_result):
    res, out = bench_result
    c = cells_by_key(res)
    ok = c["onnxruntime-fp32__b1_t1_s1"]
    assert ok["status"] == "ok" and ok["threads"] == 1 and ok["executed_precision"] == "fp32"
    assert ok["inputs"]["source"] == "validation" and ok["inputs"]["samples"] == 24
    st = ok["stats"]
    assert st["count"] >= TINY.min_iters and st["duration_s"] >= TINY.min_duration_s
    assert ok["load_s"] > 0 and ok["first_inference_s"] > 0 and ok["peak_rss_bytes"] > 10 * 2**20
    assert ok["size_bytes"] > 0 and ok["engine_version"]
    samples = np.load(ok["samples_files"][0])
    assert len(samples) == st["count"]
    assert st["percentiles_s"]["p50"] == pytest.approx(np.percentile(samples, 50))
    assert c["onnxruntime-int8-dynamic__b1_t1_s1"]["executed_precision"] == "int8"
    ov = c["openvino-fp32__b1_t1_s1_hf32"]
    assert ov["status"] == "ok" and ov["executed_precision"] == "fp32" and ov["precision_hint"] == "f32"
    assert c["openvino-fp32__b1_t1_s1"]["status"] == "ok"  # deploy: what the engine chooses, recorded
    assert c["openvino-fp32__b1_t1_s1"]["executed_precision"] in ("fp32", "bf16")


def test_each_cell_ran_in_its_own_process(bench_result):
    res, _ = bench_result
    pids = [t["pid"] for c in res["cells"] if c["status"] == "ok" for t in c["trials"]]
    assert len(pids) == len(set(pids)) > 5
    import os

    assert os.getpid() not in pids


def test_order_is_shuffled_by_the_recorded_seed(bench_result, build_dir, tmp_path):
    res, _ = bench_result
    assert res["settings"]["seed"] == 7
    cfg = api.make_config(batches=(1, 2), threads=(1,), ov_precision="both", run_length=TINY, seed=7)
    again = [c.cell_id for c in plan.plan_cells(plan.read_source(build_dir), cfg, work_dir=tmp_path)]
    assert res["order"] == again
    assert sorted(res["order"]) != res["order"]  # not the natural order


def test_bad_cells_fail_alone_with_clear_errors(bench_result):
    res, _ = bench_result
    c = cells_by_key(res)
    missing = c["onnxruntime-missing__b1_t1_s1"]
    assert missing["status"] == "error" and "model file not found" in missing["errors"][0]["message"]
    batch = c["onnxruntime-fixed__b2_t1_s1"]
    assert batch["errors"][0]["type"] == "BatchShapeError" and "fixed shape" in batch["errors"][0]["message"]
    assert c["onnxruntime-fixed__b1_t1_s1"]["status"] == "ok"
    assert api.exit_code(res) == 3


@pytest.mark.parametrize("flag,value", [("threads", (1, 0)), ("batches", (0,)), ("streams", (-1,)),
                                        ("threads", ()), ("repeats", 0)])
def test_bad_matrix_values_are_bad_input_before_any_work(flag, value):
    with pytest.raises(BenchInputError, match="must be an integer >= 1|at least one value"):
        api.make_config(**{flag: value})


def test_gate_failed_artifact_is_marked_everywhere_and_never_ranked(bench_result):
    from toolchain.bench import report_md, report_plots

    res, _ = bench_result
    gated = cells_by_key(res)["onnxruntime-int8-gated__b1_t1_s1"]
    assert gated["status"] == "ok" and gated["gate_failed"] and gated["fidelity"]["passed"] is False
    rec = res["analysis"]["recommendation"]
    assert all(r is None or not r["artifact_id"].startswith("onnxruntime-int8-gated")
               for r in [rec["best"], *rec["by_threads"].values()])
    assert any(e["key"] == gated["key"] and "fidelity gate" in e["reason"] for e in rec["excluded"])
    md = report_md.render(res)
    rows = [line for line in md.splitlines() if line.startswith("| onnxruntime-int8-gated")]
    assert rows and all("GATE FAILED" in r for r in rows)
    assert "accuracy drop 0.20 pts" in rows[0]
    pts, _ = report_plots._pareto_points(res)
    ids = [c["artifact_id"] for *_, c in pts]
    assert "onnxruntime-int8-gated" in ids  # drawn ...
    front = report_plots.front_indices(pts)
    assert front and all(pts[i][3]["artifact_id"] != "onnxruntime-int8-gated" for i in front)  # ... never on it



def test_the_front_leaves_out_a_gate_failed_point_that_would_dominate():
    """The fastest and closest artifact failed its gate: by latency and loss it is the whole
    front; the front shown is the best of the artifacts that passed."""
    from toolchain.bench import report_plots
    from toolchain.bench.fidelity import Fidelity, Metric

    def pt(ms, cos, failed):
        f = Fidelity(metric=Metric.COSINE_MIN, value=cos, higher_is_better=True, passed=not failed)
        return (ms, f, 1, {"artifact_id": f"a{ms}", "gate_failed": failed})

    pts = [pt(1.0, 0.999, True), pt(2.0, 0.99, False), pt(3.0, 0.995, False), pt(4.0, 0.98, False)]
    assert report_plots.pareto_front([(x, f.loss) for x, f, _, _ in pts]) == [0]
    assert report_plots.front_indices(pts) == [1, 2]


def test_speedup_and_recommendation_respect_the_budget(bench_result):
    res, _ = bench_result
    an = res["analysis"]
    assert an["speedups"]["onnxruntime-fp32__b1_t1_s1"]["speedup"] == pytest.approx(1.0)
    assert an["speedups"]["onnxruntime-int8-dynamic__b1_t1_s1"]["baseline"] == "onnxruntime-fp32__b1_t1_s1"
    rec = an["recommendation"]
    assert rec["best"] is not None and rec["max_accuracy_drop_pts"] == 1.0
    assert rec["best"]["artifact_id"] != "onnxruntime-fixed"  # 5 pts drop > 1 pt budget
    assert any(e["key"].startswith("onnxruntime-fixed") for e in rec["excluded"])
    best = rec["best"]["p50_s"]
    allowed = [c for c in res["cells"] if c["scenario"] == "single_stream" and c["status"] == "ok"
               and not c["artifact_id"].startswith("onnxruntime-fixed")]
    assert best == min(c["stats"]["percentiles_s"]["p50"] for c in allowed)
    assert any("VNNI" in n or "dot-product" in n for n in an["notes"])


def test_json_round_trip_and_schema_checks(bench_result, tmp_path):
    res, _ = bench_result
    p = tmp_path / "r.json"
    result_mod.save(res, p)
    assert result_mod.load(p) == json.loads(json.dumps(res))
    bad = json.loads(p.read_text())
    bad["schema_version"] = 99
    p.write_text(json.dumps(bad))
    with pytest.raises(ResultFormatError, match="schema_version 99"):
        result_mod.load(p)
    del bad["cells"][0]["key"]
    bad["schema_version"] = 1
    with pytest.raises(ResultFormatError, match="missing key 'key'"):
        result_mod.validate(bad)


def test_reports_written_with_plots(bench_result):
    res, out = bench_result
    paths = api.write_reports(res, out)
    md = paths["markdown"].read_text()
    assert "| artifact | precision |" in md and "Single-stream latency" in md and "Throughput" in md
    assert "## Recommendation" in md and "BatchShapeError" in md
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 3
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")
    # rendered from the data: every table row is there, gate-failed rows carry their mark
    n_rows = sum(1 for c in res["cells"])
    assert html.count("<tr class=\"gate-failed\">") == sum(c["gate_failed"] for c in res["cells"]) > 0
    assert html.count("<tr") == n_rows + 2  # two scenario tables, one header row each
    assert "GATE FAILED" in html and "|" not in html.split("<body>")[1].split("<h1>Plots")[0].replace("&#x27;", "")
    assert result_mod.load(paths["json"])["schema_version"] == 1


def test_insufficient_samples_printed_not_numbers(bench_result):
    res, _ = bench_result
    from toolchain.bench import report_md

    doc = json.loads(json.dumps(res))
    cell = next(c for c in doc["cells"] if c["status"] == "ok")
    cell["stats"]["percentiles_s"]["p99"] = None
    assert "insufficient samples" in report_md.tables(doc)


def test_cell_process_imports_no_torch_or_toolchain():
    code = ("import sys, runtime.bench.cell, runtime.bench.stats, runtime.bench.loop;"
            "bad=[m for m in ('torch','onnx','openvino','toolchain','tensorflow','matplotlib') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cell_entry_point_bad_spec_and_unknown_engine(tmp_path, tiny_onnx):
    spec = {"cell_id": "x", "model_path": str(tiny_onnx), "engine": "nosuchengine", "threads": 1, "batch": 1,
            "run_length": TINY.to_json()}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", "runtime.bench.cell", str(tmp_path / "s.json"), str(tmp_path / "o.json")],
                       cwd=ROOT, capture_output=True, text=True)
    out = json.loads((tmp_path / "o.json").read_text())
    assert r.returncode == 3 and out["status"] == "error" and "unknown engine" in out["error"]["message"]


def _main(argv):
    """The `edgeship bench` subcommand through toolchain.cli (its one error handler gives the exit code)."""
    from toolchain.cli import COMMANDS, main

    assert COMMANDS["bench"] == "toolchain.bench.cli:add_parser"
    return main(argv)


def test_cli_on_a_model_file_and_bad_paths(tiny_onnx, tmp_path, capsys):
    main = _main

    out = tmp_path / "o"
    args = ["bench", str(tiny_onnx), "-o", str(out), "--min-iters", "80", "--min-duration", "0.05",
            "--warmup-iters", "2", "--warmup-s", "0", "--threads", "1", "--streams", "1,2", "-q"]
    assert main(args) == 0
    res = result_mod.load(out / "result.json")
    assert {c["scenario"] for c in res["cells"]} == {"single_stream", "throughput"}
    assert res["cells"][0]["inputs"]["source"] == "random"
    assert main(["bench", str(tmp_path / "nope"), "-q"]) == 2
    assert main(["bench", str(tiny_onnx), "--engine", "tensorrt", "-o", str(tmp_path / "t"), "-q"]) == 2  # a bad option
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage")
    assert main(["bench", str(corrupt), "-o", str(tmp_path / "c"), "-q", "--min-iters", "5",
                 "--min-duration", "0"]) == 2  # bad input: found before any work
    assert "corrupt.onnx" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert main(["bench", str(tiny_onnx), "--threads", "0", "-o", str(tmp_path / "z"), "-q"]) == 2
    assert "--threads 0" in capsys.readouterr().err and not (tmp_path / "z").exists()


def test_bad_manifest_is_a_clear_input_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 42}))
    with pytest.raises(BenchInputError, match="schema_version 42"):
        plan.read_source(tmp_path)
    with pytest.raises(BenchInputError, match="no manifest.json"):
        plan.read_source(tmp_path / "..")


def test_engine_not_installed_is_that_cells_error(tiny_onnx, tmp_path, monkeypatch):
    """A broken onnxruntime package (import fails) -> EngineNotInstalledError naming the extra."""
    fake = tmp_path / "fakepkgs" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('simulated: onnxruntime is not installed')\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    cfg = api.make_config(threads=(1,), run_length=TINY)
    res = api.bench(tiny_onnx, config=cfg, out_dir=tmp_path / "o", progress=None)
    err = res["cells"][0]["errors"][0]
    assert err["type"] == "EngineNotInstalledError" and "pip install" in err["message"]
    assert api.exit_code(res) == 1


def test_report_builds_for_the_demo(build_dir, tmp_path, monkeypatch):
    import io

    monkeypatch.setattr(api, "SMOKE_LENGTH", TINY)
    out = io.StringIO()
    results = api.report_builds([build_dir, tmp_path / "absent"], smoke=True, stdout=out, progress=None)
    text = out.getvalue()
    assert len(results) == 1 and "Single-stream latency" in text and "fastest artifact" in text
    assert f"skipping {tmp_path / 'absent'}" in text
    assert (build_dir / "bench" / "report.html").exists() and (build_dir / "bench" / "result.json").exists()


def test_relative_paths_from_the_users_directory(tiny_onnx, tmp_path, monkeypatch):
    """`edgeship bench model.onnx -o out` run from the user's directory: the cell processes run
    elsewhere, so every path handed to them must still point at the user's files."""
    import shutil

    shutil.copy(tiny_onnx, tmp_path / "m.onnx")
    monkeypatch.chdir(tmp_path)
    args = ["bench", "m.onnx", "-o", "rel", "--min-iters", "20", "--min-duration", "0",
            "--warmup-iters", "1", "--warmup-s", "0", "-q"]
    assert _main(args) == 0
    res = result_mod.load(tmp_path / "rel" / "result.json")
    assert res["cells"][0]["status"] == "ok"
    assert (tmp_path / "rel" / "samples").is_dir() and any((tmp_path / "rel" / "samples").iterdir())
