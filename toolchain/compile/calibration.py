"""The int8 calibration checks the converters share (pure: values in, a SampleSet or an error out).

OpenVINO (NNCF) and TFLite (PT2E) both quantize from ``ctx.calibration`` with a recipe named by
``ctx.quant.calibration_method``; both refuse, before any work, a method their library lacks,
a missing or empty calibration set, and a sample whose input names differ from the model's.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping

from toolchain.compile.context import BuildContext, SampleSet
from toolchain.errors import ConversionError, DataError


def checked_calibration(
    ctx: BuildContext,
    *,
    what: str,
    methods: Collection[str],
    library: str,
    scheme: str,
    expected: Collection[str],
    check_sample: Callable[[int, Mapping[str, Any]], None] | None = None,
) -> SampleSet:
    """``ctx.calibration`` once it fits the recipe and the model's inputs.

    Args:
        what: the variant, as messages name it (``"openvino int8"``).
        methods: the calibration methods the library offers.
        library: where a method is looked up, as messages say it (``"in NNCF"``).
        scheme: the quantization scheme, as messages say it (``"post-training quantization"``).
        expected: the model's input names; every sample must have exactly these.
        check_sample: further per-sample checks (index, feeds), run after the name check.

    Raises:
        ConversionError: the method is not in ``methods``, or there is no calibration data.
        DataError: a sample's input names differ from ``expected`` (or ``check_sample`` says so).
    """
    method = ctx.quant.calibration_method
    if method not in methods:
        raise ConversionError(
            f"{what}: calibration method {method!r} is not available {library}; use one of {sorted(methods)}"
        )
    if ctx.calibration is None or len(ctx.calibration) == 0:
        raise ConversionError(
            f"{what} needs calibration data ({scheme}): pass calibration samples, "
            "or explicitly allow random calibration data"
        )
    names = set(expected)
    for i, feeds in enumerate(ctx.calibration.samples):
        if set(feeds) != names:
            raise DataError(f"calibration sample {i} has inputs {sorted(feeds)}; the model expects {sorted(names)}")
        if check_sample is not None:
            check_sample(i, feeds)
    return ctx.calibration
