"""Retrain on what you pulled: ``toolchain.data.load_labelled`` reads the labelled samples of a
verified capture set, ``toolchain.models.digits.fine_tune`` trains given weights further on them
(docs/capture.md "Retrain on what you pulled"), ``build(weights=...)`` compiles the checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.contracts.capture import fileformat as ff
from toolchain.data import captures, load_labelled
from toolchain.errors import DataError

from capturehelpers import host_capture  # noqa: E402 (tests/capture is on sys.path)


def _write(root, caps):
    w = captures.SetWriter(root)
    for c in caps:
        w.add(c, subdir=c.meta.device)
    w.commit()
    return root


def test_load_labelled_keeps_the_labelled_samples_in_index_order(tmp_path):
    caps = [host_capture(i, "cam-1" if i < 3 else "cam-2", n=2, labels=i != 2, y=[i, i + 1]) for i in range(5)]
    inputs, labels = load_labelled(_write(tmp_path / "pulled", caps))
    assert list(inputs) == ["x"] and inputs["x"].shape == (8, 4) and labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 1, 2, 3, 4, 4, 5]  # capture 2 carried no labels: left out
    assert np.array_equal(inputs["x"][4:6], caps[3].inputs["x"])


def test_load_labelled_refuses_unlabelled_tampered_and_mixed_sets(tmp_path):
    root = _write(tmp_path / "none", [host_capture(i, "cam-1", labels=False) for i in range(2)])
    with pytest.raises(DataError, match="no labelled sample.*edgeship_expected"):
        load_labelled(root)
    mixed = _write(tmp_path / "mixed", [host_capture(0, "cam-1"), host_capture(1, "cam-1", input_name="z")])
    with pytest.raises(DataError, match="different inputs"):
        load_labelled(mixed)
    good = _write(tmp_path / "good", [host_capture(i, "cam-1") for i in range(2)])
    victim = sorted((good / "cam-1").glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:50])
    with pytest.raises(ff.CaptureFormatError, match=f"{victim.name}: partial"):
        load_labelled(good)


def test_fine_tune_on_pulled_inverted_digits_learns_them_and_keeps_the_normal(tmp_path):
    torch = pytest.importorskip("torch")
    from toolchain.models import digits

    v = digits.validation_data()
    x, y = v["image"], v["__labels__"]
    rng = np.random.default_rng(0)
    train, held = np.arange(0, 300), np.arange(300, len(x))  # held: never trained on
    inverted = lambda idx: (-x[idx] + rng.normal(0, 0.05, x[idx].shape)).astype(np.float32)  # noqa: E731
    caps = [host_capture(i, "cam-1", n=30, x=inverted(train[i * 30:(i + 1) * 30]), y=y[train[i * 30:(i + 1) * 30]],
                         input_name=digits.INPUT_NAME) for i in range(10)]
    inputs, labels = load_labelled(_write(tmp_path / "pulled", caps))

    def acc(state, xs, ys):
        m = digits._make_model()
        m.load_state_dict(state)
        with torch.no_grad():
            return float((m.eval()(torch.from_numpy(xs)).argmax(1).numpy() == ys).mean())

    start = digits.trained_state(epochs=5)  # release 1's weights, trained briefly to keep the test quick
    before = {k: t.clone() for k, t in start.items()}
    tuned = digits.fine_tune(start, inputs[digits.INPUT_NAME], labels, epochs=4, seed=0)
    assert all(torch.equal(before[k], start[k]) for k in start), "the given state is not changed"
    xi = inverted(held)
    assert acc(tuned, xi, y[held]) >= acc(start, xi, y[held]) + 0.30
    assert acc(tuned, x[held], y[held]) >= acc(start, x[held], y[held]) - 0.05  # the training split is mixed in
    once = [digits.fine_tune(start, inputs[digits.INPUT_NAME], labels, epochs=1, seed=3, mix_training=False)
            for _ in range(2)]
    assert all(torch.equal(t, once[1][k]) for k, t in once[0].items()), "seeded: the same run, the same weights"

    ckpt = tmp_path / "ft.pt"
    torch.save(tuned, ckpt)
    fr = digits.build(weights=str(ckpt))
    assert all(torch.equal(t, tuned[k]) for k, t in fr.module.state_dict().items())
    assert fr.metadata["weights"] == str(ckpt)
    with pytest.raises(ValueError, match=r"\[N,1,8,8\]"):
        digits.fine_tune(start, inputs[digits.INPUT_NAME][:, 0], labels)
    with pytest.raises(ValueError, match="0..9"):
        digits.fine_tune(start, inputs[digits.INPUT_NAME], labels + 10)


def test_demo_loop_publishes_release_2_only_when_it_is_clearly_better():
    from toolchain.demo_loop import _judge

    _judge({"shifted": {"r1": 0.20, "r2": 0.87}, "normal": {"r1": 0.98, "r2": 0.97}})
    with pytest.raises(RuntimeError, match=r"gains \+20.0 points on the held-out inverted digits"):
        _judge({"shifted": {"r1": 0.20, "r2": 0.40}, "normal": {"r1": 0.98, "r2": 0.98}})
    with pytest.raises(RuntimeError, match="loses 8.0 points on the held-out normal digits"):
        _judge({"shifted": {"r1": 0.20, "r2": 0.90}, "normal": {"r1": 0.98, "r2": 0.90}})
