"""ResNet and VGG16 backbones laid out exactly as torchvision's (same module names, so the same state
dict keys), so ImageNet weights load through torchvision's own weights API without edgeface needing
torchvision: ``load_imagenet(model.backbone, "ResNet50_Weights.IMAGENET1K_V1")``.

Only the convolutional trunk is built (no pooling head or classifier). VGG pooling uses Caffe's
ceil mode (the SHF authors trained in Caffe), which also makes every stride-``2**k`` map
``k`` halvings ``n -> ceil(n / 2)`` of the input, as edgeface's anchor layout assumes.
"""

from __future__ import annotations

import torch
from torch import nn


def init_like_torchvision(module: nn.Module) -> None:
    """torchvision's initialisation of its ResNet and VGG: He-normal convolutions (fan out), zero biases,
    unit BatchNorm. PyTorch's default convolution init shrinks activations layer by layer, which leaves a
    BatchNorm-free VGG16 trained from scratch with an almost constant detection map."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1 -> 3x3 (carries the stride) -> 1x1 x4, projection shortcut when needed."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or inplanes != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class ResNet(nn.Module):
    """ResNet-50/101 trunk; ``forward`` returns the outputs of ``layer1 ... layer{stages}`` (C2 ... C5,
    strides 4 ... 32). ``stages=3`` stops after res4 (Tiny Faces)."""

    def __init__(self, depth: int = 50, stages: int = 4):
        super().__init__()
        if depth not in RESNET_BLOCKS or not 1 <= stages <= 4:
            raise ValueError(f"no ResNet-{depth} with {stages} stages (depths: {sorted(RESNET_BLOCKS)})")
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        self.channels: list[int] = []
        for stage, blocks in enumerate(RESNET_BLOCKS[depth][:stages]):
            planes = 64 * 2**stage
            layers = []
            for i in range(blocks):
                layers.append(Bottleneck(inplanes, planes, 2 if i == 0 and stage > 0 else 1))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
            self.channels.append(inplanes)
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in range(len(self.channels)):
            x = getattr(self, f"layer{stage + 1}")(x)
            outs.append(x)
        return outs


VGG16_CONV5_3 = 29  # index in `features` of the ReLU after conv5_3 (torchvision's numbering)
VGG16_CONV4_3 = 22  # ... and after conv4_3


class VGG16(nn.Module):
    """VGG16 ``features`` up to conv5_3 + ReLU (torchvision's indices, pool5 dropped); ``forward`` returns
    ``(conv4_3, conv5_3)`` (strides 8 and 16)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for stage, (width, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            if stage < 4:
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv4_3 = self.features[: VGG16_CONV4_3 + 1](x)
        return conv4_3, self.features[VGG16_CONV4_3 + 1 : VGG16_CONV5_3 + 1](conv4_3)


def load_imagenet(backbone: nn.Module, weights: str) -> None:
    """Load torchvision ImageNet weights (e.g. ``"ResNet50_Weights.IMAGENET1K_V1"``, ``"VGG16_Weights.IMAGENET1K_V1"``)
    into a backbone through torchvision's weights API (it downloads into torch's cache unless already there).
    The classifier's weights are dropped; every trunk weight must fit."""
    try:
        from torchvision.models import get_weight
    except ImportError as exc:
        raise ImportError("ImageNet initialisation uses torchvision's weights API: pip install torchvision") from exc
    state = get_weight(weights).get_state_dict(progress=True)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.startswith("layer4.") and not k.startswith("features.30")]
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit this backbone: missing {missing[:5]}, unexpected {unexpected[:5]}")
