"""Seeded, realistic initialisation for the untrained reference networks.

Untrained networks with default BatchNorm statistics (mean 0, var 1) give activations that
grow or vanish layer by layer, which makes quantization figures meaningless. We give every
BatchNorm plausible running statistics by running a few seeded batches through the model in
train mode, so the network behaves like a trained one numerically (bounded activations).
"""

from __future__ import annotations

from typing import Any, Callable


def seeded_init(model: Any, *, seed: int, calib_batches: int = 2, image_size: int = 64) -> None:
    """Kaiming conv init, small linear init, then BatchNorm statistics from seeded data."""
    import torch
    import torch.nn as nn

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            with torch.no_grad():
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=g)
        elif isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.01, generator=g)
                m.bias.zero_()
    model.train()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = None  # cumulative average over the calibration batches
            mod.reset_running_stats()
    with torch.no_grad():
        for _ in range(calib_batches):
            model(torch.randn(8, 3, image_size, image_size, generator=g))
    model.eval()


def seeded_image_classifier(make_model: Callable[[], Any], *, image_size: int, num_classes: int, seed: int) -> Any:
    """The factory result for a seeded, untrained image classifier (shared by the reference CNNs).

    ``make_model()`` builds the network (under ``torch.manual_seed(seed)``); it is given
    :func:`seeded_init`, put in eval mode and paired with one seeded example input
    ``(1, 3, image_size, image_size)`` named ``image`` (dynamic batch) -> ``logits``.
    """
    import torch

    from toolchain.compile.source import FactoryResult

    torch.manual_seed(seed)
    model = make_model()
    seeded_init(model, seed=seed)
    model.eval()
    example = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    return FactoryResult(
        module=model, example_inputs=(example,), input_names=("image",), output_names=("logits",),
        dynamic_axes={"image": {0: "batch"}}, metadata={"task": "classification", "num_classes": num_classes},
    )
