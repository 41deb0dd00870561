"""Real input data for the corpus models: photos, rendered text, synthesised speech (no downloads).

Every ``*_calibration`` / ``*_validation`` function takes no argument and returns a dict in
the :mod:`toolchain.data` format (one array per model input, samples along axis 0, optional
``__labels__``), so it can be passed as ``--calibration toolchain/models/realdata.py:NAME``.
Calibration and validation draw different samples (different seeds or text lines).

- photos: scikit-learn's bundled ``china.jpg`` and ``flower.jpg`` (``load_sample_images``),
  cropped at random places and scales and resized with PIL;
- text: real English sentences (``data/sentences.txt``) rendered with PIL's built-in
  FreeType font as PP-OCR text lines (48 px high) and as pages for text detection;
- speech: sentences spoken by ``espeak-ng`` (Debian package; ``make system-deps``),
  resampled to 16 kHz, with silence between them (for the voice-activity detector).

Sizes follow the models' own pre-processing (RapidOCR's ``config.yaml``: rec 3x48x320,
cls 3x48x192, det mean/std 0.5; MTCNN ``(x - 127.5) / 128``).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import DataError

SENTENCES_FILE = Path(__file__).with_name("data") / "sentences.txt"
REC_SHAPE, CLS_SHAPE = (48, 320), (48, 192)
DET_SIZE = (320, 320)
VAD_RATE, VAD_CHUNK = 16000, 512


class RealDataError(DataError):
    """A real-data generator cannot run here (a tool such as espeak-ng is missing)."""


def sentences() -> list[str]:
    return [ln.strip() for ln in SENTENCES_FILE.read_text(encoding="utf-8").splitlines() if ln.strip()]


# --- photos -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)


def photo_crops(*, size: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """``n`` RGB crops of the bundled photos resized to ``size`` (h, w), MTCNN-normalised, NCHW float32."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, *size), dtype=np.float32)
    photos = _photos()
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        scale = rng.uniform(0.15, 0.9)
        ch, cw = max(8, int(h * scale)), max(8, int(h * scale * size[1] / size[0]))
        cw = min(cw, w)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(img[y:y + ch, x:x + cw]).resize((size[1], size[0]), Image.BILINEAR)
        out[i] = ((np.asarray(crop, dtype=np.float32) - 127.5) / 128.0).transpose(2, 0, 1)
    return out


# --- rendered text ------------------------------------------------------------------------

def _font(px: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=px)


def text_line(text: str, *, shape: tuple[int, int], flip: bool = False) -> np.ndarray:
    """One line of dark text on a light background, PP-OCR normalised: float32 [3, h, w]."""
    from PIL import Image, ImageDraw

    h, w = shape
    font = _font(int(h * 0.62))
    width = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=font)) + 8
    line = Image.new("RGB", (max(width, 8), h), (245, 243, 238))
    ImageDraw.Draw(line).text((4, h * 0.15), text, fill=(25, 25, 30), font=font)
    # PP-OCR keeps the aspect ratio at height h and pads the rest of the width
    new_w = min(w, max(1, int(line.width * h / line.height)))
    line = line.resize((new_w, h), Image.BILINEAR)
    if flip:
        line = line.rotate(180)
    arr = np.zeros((3, h, w), dtype=np.float32)  # the padding PP-OCR uses (0 after normalising)
    arr[:, :, :new_w] = (np.asarray(line, dtype=np.float32) / 255.0 - 0.5).transpose(2, 0, 1) / 0.5
    return arr


def _lines(role: str, n: int) -> list[str]:
    words = " ".join(sentences()).split()
    rng = np.random.default_rng(1 if role == "calibration" else 2)
    out = []
    for _ in range(n):
        k, start = int(rng.integers(2, 6)), int(rng.integers(0, len(words) - 6))
        out.append(" ".join(words[start:start + k]))
    return out


def ppocr_rec_calibration() -> dict[str, np.ndarray]:
    return {"x": np.stack([text_line(t, shape=REC_SHAPE) for t in _lines("calibration", 32)])}


def ppocr_rec_validation() -> dict[str, np.ndarray]:
    return {"x": np.stack([text_line(t, shape=REC_SHAPE) for t in _lines("validation", 24)])}


def _cls(role: str, n: int) -> dict[str, np.ndarray]:
    lines = _lines(role, n)
    flips = np.arange(n) % 2 == 1  # label 1 = rotated 180 degrees (RapidOCR's label_list ['0', '180'])
    return {"x": np.stack([text_line(t, shape=CLS_SHAPE, flip=f) for t, f in zip(lines, flips)]),
            "__labels__": flips.astype(np.int64)}


def ppocr_cls_calibration() -> dict[str, np.ndarray]:
    return {"x": _cls("calibration", 32)["x"]}


def ppocr_cls_validation() -> dict[str, np.ndarray]:
    return _cls("validation", 24)


def page(seed: int, *, size: tuple[int, int] = DET_SIZE) -> np.ndarray:
    """A page of a few rendered sentences, det-normalised (mean/std 0.5): float32 [3, h, w]."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    h, w = size
    img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(225, 256, 3)))
    draw = ImageDraw.Draw(img)
    text = sentences()
    y = int(rng.integers(4, 20))
    while y < h - 30:
        px = int(rng.integers(14, 26))
        line = text[int(rng.integers(0, len(text)))]
        draw.text((int(rng.integers(4, 30)), y), line[: int(rng.integers(12, 40))], fill=(20, 20, 20), font=_font(px))
        y += px + int(rng.integers(8, 30))
    return (np.asarray(img, dtype=np.float32) / 255.0 - 0.5).transpose(2, 0, 1) / 0.5


def ppocr_det_calibration() -> dict[str, np.ndarray]:
    return {"x": np.stack([page(100 + i) for i in range(16)])}


def ppocr_det_validation() -> dict[str, np.ndarray]:
    return {"x": np.stack([page(200 + i) for i in range(12)])}


# --- speech -------------------------------------------------------------------------------

def speak(text: str) -> np.ndarray:
    """``text`` spoken by espeak-ng, float32 mono at 16 kHz. Raises RealDataError without espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RealDataError("espeak-ng is not installed (apt-get install espeak-ng; `make system-deps`)")
    with tempfile.TemporaryDirectory(prefix="edgeship-speech-") as tmp:
        wav = Path(tmp) / "s.wav"
        subprocess.run([exe, "-w", str(wav), text], check=True, capture_output=True, timeout=60)
        with wave.open(str(wav)) as f:
            rate, raw = f.getframerate(), f.readframes(f.getnframes())
    pcm = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0
    t_new = np.arange(int(len(pcm) * VAD_RATE / rate)) / VAD_RATE
    return np.interp(t_new, np.arange(len(pcm)) / rate, pcm).astype(np.float32)


@functools.lru_cache(maxsize=2)
def speech_track(role: str) -> np.ndarray:
    """A few sentences with 0.3-0.6 s of quiet noise between them (16 kHz float32)."""
    rng = np.random.default_rng(5 if role == "calibration" else 6)
    picks = sentences()[:3] if role == "calibration" else sentences()[3:6]
    parts = []
    for s in picks:
        parts.append(rng.normal(0, 0.002, int(VAD_RATE * rng.uniform(0.3, 0.6))).astype(np.float32))
        parts.append(speak(s))
    return np.concatenate(parts)


def silero_vad_samples(role: str, *, limit: int) -> dict[str, np.ndarray]:
    """512-sample chunks of the speech track with the recurrent state the float model carries.

    The state fed with each chunk is the one the model itself produced on the previous chunk
    (ONNX Runtime on the float model), so calibration sees the states it will see in use.
    """
    import onnxruntime as ort

    from toolchain.models.corpus import get

    track = speech_track(role)
    chunks = track[: len(track) // VAD_CHUNK * VAD_CHUNK].reshape(-1, VAD_CHUNK)
    step = max(1, len(chunks) // limit)
    sess = ort.InferenceSession(str(get("silero-vad").path()), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), dtype=np.float32)
    inputs, states = [], []
    for i, c in enumerate(chunks):
        if i % step == 0 and len(inputs) < limit:
            inputs.append(c)
            states.append(state[:, 0, :])  # the batch axis of state is 1 (--batch-axis state:1)
        _, state = sess.run(None, {"input": c[None], "state": state, "sr": np.array(VAD_RATE, dtype=np.int64)})
    n = len(inputs)
    # samples along axis 0: input [n, 512], state [n, 2, 128] (batch axis 1 taken out), sr: a scalar each
    return {"input": np.stack(inputs), "state": np.stack(states), "sr": np.full((n,), VAD_RATE, dtype=np.int64)}


def silero_vad_calibration() -> dict[str, np.ndarray]:
    return silero_vad_samples("calibration", limit=64)


def silero_vad_validation() -> dict[str, np.ndarray]:
    return silero_vad_samples("validation", limit=48)
