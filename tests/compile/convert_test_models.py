"""Small torch models and reference helpers shared by the converter tests (a module name no
other test directory uses; tests/compile/conftest.py puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np
import torch

from toolchain.compile.context import BuildContext, SampleSet


class TinyConv(torch.nn.Module):
    """One float image input ``(batch, 1, 16, 16)`` -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1, stride=2)
        self.fc = torch.nn.Linear(8 * 8 * 8, 10)

    def forward(self, image):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(image)))).flatten(1))


class TwoInput(torch.nn.Module):
    """int64 token ids + float features, two outputs (dynamic batch and seq where exported so)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.proj = torch.nn.Linear(16, 16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, ids, feats):
        h = torch.relu(self.emb(ids) + self.proj(feats))
        return self.head(h).mean(1), h.sum(-1)


def two_input_calibration() -> SampleSet:
    """32 seeded ``ids``/``feats`` samples at batch 1, seq 7."""
    rng = np.random.default_rng(1)
    return SampleSet([
        {"ids": rng.integers(0, 50, (1, 7), dtype=np.int64), "feats": rng.standard_normal((1, 7, 16), dtype=np.float32)}
        for _ in range(32)
    ])


def torch_ref(ctx: BuildContext, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The context's torch module run on ``feeds``, outputs named as ``ctx.outputs``."""
    with torch.no_grad():
        out = ctx.torch_module(*[torch.from_numpy(feeds[s.name]) for s in ctx.inputs])
    outs = out if isinstance(out, tuple) else (out,)
    return {s.name: o.numpy() for s, o in zip(ctx.outputs, outs)}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
