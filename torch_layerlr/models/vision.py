"""Image classifiers for the training comparisons: the DALS paper's MLP and ConvNet, and a small residual CNN.

Each takes ``in_channels`` and ``image_size`` so the same definition serves Fashion-MNIST (1 x 28 x 28) and
CIFAR-10 (3 x 32 x 32). The top-level children are the layer groups the DALS authors use (research note A.2):
``MLP`` has four (one per ``Linear``), ``ConvNet`` two (``features``, ``classifier``), ``ResNet`` five (stem,
three stages, head). :class:`DeepMLP` (plain or residual, any depth) is the depth-transfer benchmark's family.
"""

from __future__ import annotations

import math
import re

from torch import Tensor, nn

__all__ = ["MLP", "ConvNet", "ResNet", "DeepMLP", "MODELS", "build_model"]


class MLP(nn.Module):
    """The DALS paper's four-layer MLP (``Test_All.py`` ``SyntheticMLP``) on flattened images:
    ``in -> hidden -> hidden -> hidden -> classes`` with ReLU."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, hidden: int = 256) -> None:
        super().__init__()
        in_features = in_channels * image_size * image_size
        self.layer1 = nn.Linear(in_features, hidden)
        self.layer2 = nn.Linear(hidden, hidden)
        self.layer3 = nn.Linear(hidden, hidden)
        self.layer4 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        x = self.layer1(x).relu()
        x = self.layer2(x).relu()
        x = self.layer3(x).relu()
        return self.layer4(x)


class ConvNet(nn.Module):
    """The DALS paper's CIFAR-10 ConvNet (``SmallConvNet``): three 3x3 conv + ReLU + 2x2 max-pool stages
    (32, 64, 128 channels), then ``Linear(128 * s * s, 256)``, ReLU, ``Linear(256, classes)``; ``s`` is the
    image size after three poolings (4 for 32 x 32, 3 for 28 x 28)."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        side = image_size // 8
        self.classifier = nn.Sequential(nn.Linear(128 * side * side, 256), nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm with an identity (or 1x1 conv) shortcut, as in He et al. 2016."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(out)) + self.shortcut(x)).relu()


class ResNet(nn.Module):
    """A small residual CNN: a 3x3 stem, three stages of one :class:`BasicBlock` each (``width``, 2x, 4x
    channels; stride 1, 2, 2), global average pooling and a linear head. About 0.3 M parameters at
    ``width=32``."""

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        del image_size  # global pooling: any size works
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stage1 = BasicBlock(width, width, 1)
        self.stage2 = BasicBlock(width, 2 * width, 2)
        self.stage3 = BasicBlock(2 * width, 4 * width, 2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(self.stem(x)))))


class DeepMLP(nn.Module):
    r"""An MLP with ``depth`` weight layers of width ``width``: ``inp`` (in -> width), ``depth - 2`` hidden layers
    in ``hidden``, ``head`` (width -> classes), ReLU between them.

    ``residual=False``: :math:`h \leftarrow \mathrm{relu}(W_k h)`. ``residual=True``:
    :math:`h \leftarrow h + W_k\,\mathrm{relu}(h)/\sqrt{L-2}` (the :math:`1/\sqrt{L}` branch scaling of depth-wise
    parametrisations, e.g. Yang et al. 2023 "Tensor Programs VI", Bordelon et al. 2023, so that the forward pass
    stays of order one at any depth). PyTorch's default ``Linear`` initialisation everywhere."""

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, depth: int = 4,
                 residual: bool = False, width: int = 128) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2, got {depth!r}")
        self.residual = residual
        self.inp = nn.Linear(in_channels * image_size * image_size, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 2))
        self.head = nn.Linear(width, num_classes)
        self.branch_scale = 1.0 / math.sqrt(max(depth - 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.inp(x.flatten(1))
        for layer in self.hidden:
            h = h + self.branch_scale * layer(h.relu()) if self.residual else layer(h.relu())
        return self.head(h.relu())


#: The ``--model`` choices of ``python -m torch_layerlr train``; also ``deep-mlp-L`` and ``res-mlp-L``
#: (:class:`DeepMLP` with L weight layers, plain or residual).
MODELS = {"mlp": MLP, "convnet": ConvNet, "resnet": ResNet}

_DEEP = re.compile(r"(deep|res)-mlp-(\d+)")


def build_model(name: str, in_channels: int, image_size: int, num_classes: int) -> nn.Module:
    """The model ``name`` (a key of :data:`MODELS`, or ``deep-mlp-L`` / ``res-mlp-L``) for images of
    ``in_channels x image_size x image_size``."""
    deep = _DEEP.fullmatch(name)
    if deep is not None:
        return DeepMLP(in_channels, image_size, num_classes, depth=int(deep.group(2)), residual=deep.group(1) == "res")
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, deep-mlp-L or res-mlp-L, got {name!r}")
    if image_size < 8 and name == "convnet":
        raise ValueError(f"image_size must be at least 8 for the ConvNet (three 2x2 poolings), got {image_size}")
    return MODELS[name](in_channels=in_channels, image_size=image_size, num_classes=num_classes)
