"""Pareto view: front selection and readable labels when many points share an accuracy value."""

from __future__ import annotations

import base64

from toolchain.bench import report_plots


def test_pareto_front_lower_is_better_on_both_axes():
    pts = [(5.0, 9.4), (9.3, 9.4), (10.3, 12.5), (17.0, 0.0), (36.0, 0.0), (4.0, 20.0)]
    assert report_plots.pareto_front(pts) == [5, 0, 3]


def test_equal_drop_labels_are_staggered_not_on_one_line():
    pts = [(0.02 + 0.001 * i, 0.0) for i in range(12)]
    offs = report_plots.label_offsets(pts)
    # neighbours never share a text position, and the labels spread over several rows
    assert all(a != b for a, b in zip(offs, offs[1:]))
    assert len({dy for _, dy in offs}) >= 4
    # points with their own accuracy value keep the default position above the marker
    assert report_plots.label_offsets([(1.0, 0.0), (2.0, 5.0)])[1] == report_plots.label_offsets([(1.0, 0.0)])[0]


def _cell(i: int, p90_ms: float, drop: float) -> dict:
    return {"scenario": "single_stream", "status": "ok", "engine": ("onnxruntime", "openvino", "tflite")[i % 3],
            "threads": 1 + i % 2, "artifact_id": f"artifact-{i}", "precision": "fp32", "size_bytes": 1000 + i,
            "stats": {"percentiles_s": {"p90": p90_ms / 1e3}}, "accuracy": {"accuracy_drop_pts": drop}}


def test_pareto_plot_with_all_zero_drop_renders_png(tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    res = {"cells": [_cell(i, 0.02 + 0.007 * i, 0.0) for i in range(18)]}
    png = base64.b64decode(report_plots.plot_pareto(res))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert report_plots.plot_pareto({"cells": []}) is None
