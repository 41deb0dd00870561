"""A small CNN trained on scikit-learn's bundled 8x8 digits data set (real data, real accuracy).

Nothing is downloaded: ``sklearn.datasets.load_digits`` ships with scikit-learn. The split is
seeded and fixed: a held-out validation split (with labels) that the model never trains on, a
calibration split drawn from the training images, and the rest for training. Training is
seeded, single-threaded-deterministic and takes a few seconds on 2 cores.

Compile it with ``edgeship compile ref:digits`` (the factory carries its own calibration and
validation data) or ``edgeship compile toolchain/models/digits.py:build``. The data splits are
also exposed as callables for ``--calibration``/``--validation``:
``toolchain/models/digits.py:calibration_data`` and ``toolchain/models/digits.py:validation_data``.
:func:`fine_tune` trains given weights further on new labelled images (e.g. a pulled capture
set) mixed with the training split; ``build(weights=...)`` compiles a saved checkpoint.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
VALIDATION_SAMPLES = 450
CALIBRATION_SAMPLES = 128
_SPLIT_SEED = 1234


@functools.lru_cache(maxsize=1)
def _splits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    ds = load_digits()
    x = (ds.images.astype(np.float32) / 16.0 - 0.5) / 0.5  # [-1, 1]
    x = x[:, None, :, :]  # N, 1, 8, 8
    y = ds.target.astype(np.int64)
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(x))
    val, train = order[:VALIDATION_SAMPLES], order[VALIDATION_SAMPLES:]
    calib = train[:CALIBRATION_SAMPLES]
    return {"x_train": x[train], "y_train": y[train], "x_val": x[val], "y_val": y[val], "x_calib": x[calib]}


def validation_data() -> dict[str, np.ndarray]:
    """Held-out split: ``{"image": float32[450,1,8,8], "__labels__": int64[450]}``."""
    s = _splits()
    return {INPUT_NAME: s["x_val"], "__labels__": s["y_val"]}


def calibration_data() -> dict[str, np.ndarray]:
    """Calibration split (128 training images): ``{"image": float32[128,1,8,8]}``."""
    return {INPUT_NAME: _splits()["x_calib"]}


def _make_model() -> Any:
    import torch.nn as nn

    class DigitsCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
            )
            self.classifier = nn.Linear(64, 10)

        def forward(self, image):
            return self.classifier(self.features(image).flatten(1))

    return DigitsCNN()


def _fit(model: Any, x: Any, y: Any, *, epochs: int, seed: int, lr: float) -> dict:
    """Seeded Adam over shuffled batches of 64; returns a detached copy of the state dict."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return {k: v.detach().clone() for k, v in model.eval().state_dict().items()}


@functools.lru_cache(maxsize=2)
def _trained_state(seed: int, epochs: int) -> dict:
    import torch

    s = _splits()
    torch.manual_seed(seed)
    return _fit(_make_model(), torch.from_numpy(s["x_train"]), torch.from_numpy(s["y_train"]),
                epochs=epochs, seed=seed, lr=3e-3)


def trained_state(*, seed: int = 0, epochs: int = 15) -> dict:
    """The trained weights (a state dict; save it with ``torch.save`` as a checkpoint for ``build``)."""
    return {k: v.clone() for k, v in _trained_state(seed, epochs).items()}


def fine_tune(state: dict, x: np.ndarray, y: np.ndarray, *, epochs: int = 6, seed: int = 0, lr: float = 1e-3,
              mix_training: bool = True) -> dict:
    """``state`` trained further on new images ``x`` (float32[N,1,8,8]) with labels ``y`` (int[N]).

    With ``mix_training`` the original training split is mixed in, so the classes the model
    knew are not forgotten. Seeded; a few seconds on 2 cores for a few thousand images.
    Returns the new state dict (``state`` is not changed).

    Raises:
        ValueError: ``x`` is not [N,1,8,8] or ``y`` has not N labels in 0..9.
    """
    import torch

    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int64)
    if x.ndim != 4 or x.shape[1:] != (1, 8, 8) or y.shape != (len(x),) or len(x) == 0:
        raise ValueError(f"fine_tune: images must be float32[N,1,8,8] with N labels; got {x.shape} and {y.shape}")
    if y.min() < 0 or y.max() > 9:
        raise ValueError(f"fine_tune: labels must be in 0..9; got {int(y.min())}..{int(y.max())}")
    if mix_training:
        s = _splits()
        x, y = np.concatenate([s["x_train"], x]), np.concatenate([s["y_train"], y])
    torch.manual_seed(seed)
    model = _make_model()
    model.load_state_dict(state)
    return _fit(model, torch.from_numpy(x), torch.from_numpy(y), epochs=epochs, seed=seed, lr=lr)


def trained_model(*, seed: int = 0, epochs: int = 15) -> Any:
    """The trained DigitsCNN in eval mode (memoized per process)."""
    model = _make_model()
    model.load_state_dict(_trained_state(seed, epochs))
    return model.eval()


def accuracy(model: Any) -> float:
    """Top-1 accuracy of a torch model on the held-out validation split."""
    import torch

    v = validation_data()
    with torch.no_grad():
        pred = model(torch.from_numpy(v[INPUT_NAME])).argmax(1).numpy()
    return float((pred == v["__labels__"]).mean())


def build(*, seed: int = 0, epochs: int = 15, weights: str | None = None) -> Any:
    """Factory: the trained model, an example input, names, and its own data splits.

    ``weights``: a checkpoint (a state dict saved with ``torch.save``, e.g. from
    :func:`fine_tune`) used instead of training: ``edgeship compile ref:digits --arg weights=ft.pt``.
    """
    import torch

    from toolchain.compile.source import FactoryResult

    if weights is None:
        model = trained_model(seed=seed, epochs=epochs)
    else:
        model = _make_model()
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model.eval()
    example = torch.from_numpy(_splits()["x_val"][:1].copy())
    return FactoryResult(
        module=model, example_inputs=(example,), input_names=(INPUT_NAME,), output_names=(OUTPUT_NAME,),
        dynamic_axes={INPUT_NAME: {0: "batch"}},
        calibration=calibration_data, validation=validation_data,
        metadata={"task": "classification", "num_classes": 10, "dataset": "sklearn.load_digits",
                  **({"weights": str(weights)} if weights is not None else {})},
    )
