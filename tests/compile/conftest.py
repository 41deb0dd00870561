"""Fixtures for the compile tests: tiny factory files written to tmp dirs, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# the converter tests import their shared models from convert_test_models.py (a unique module name)
sys.path.insert(0, str(Path(__file__).parent))

TINY_FACTORY = '''
import torch
import torch.nn as nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def build():
    torch.manual_seed(0)
    return Tiny().eval(), (torch.randn(1, 3, 8, 8),), {
        "input_names": ["pixels"], "output_names": ["scores"], "dynamic_axes": {"pixels": {0: "batch"}}}
'''

SEQ_FACTORY = '''
import torch
import torch.nn as nn


class TwoInputs(nn.Module):
    """int64 token ids + float mask, dynamic batch and sequence length, two named outputs."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, ids, mask):
        h = torch.tanh(self.proj(self.emb(ids))) * mask.unsqueeze(-1)
        pooled = h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(pooled), h


def build():
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (1, 7))
    mask = torch.ones(1, 7)
    return TwoInputs().eval(), (ids, mask), {
        "input_names": ["input_ids", "attention_mask"], "output_names": ["logits", "hidden"],
        "dynamic_axes": {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}}
'''


@pytest.fixture
def tiny_factory(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.py"
    p.write_text(TINY_FACTORY)
    return p


@pytest.fixture
def seq_factory(tmp_path: Path) -> Path:
    p = tmp_path / "seqmodel.py"
    p.write_text(SEQ_FACTORY)
    return p


def write(tmp_path: Path, name: str, code: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(code))
    return p


def run_cli(args: list[str], *, prelude: str = "", timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``edgeship`` in a fresh interpreter; ``prelude`` runs first (e.g. hide a package)."""
    code = prelude + "\nimport sys\nfrom toolchain.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO, env=env)


@pytest.fixture(name="write")
def _write_fixture():
    return write


@pytest.fixture(name="run_cli")
def _run_cli_fixture():
    return run_cli
