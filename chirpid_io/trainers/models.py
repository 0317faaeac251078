"""Classifiers over (B, 1, n_mels, frames) log-mel images.

- ``BirdCNN``: a small, fast plain CNN (the default; trains in seconds on a CPU).
- ``BirdCNNv5c``: the old ChirpID network, EfficientNet-like (stem, 11 MBConv blocks with
  squeeze-excitation, 1x1 head to 1536, global pool, dropout 0.6), about 8.0 M parameters
  at 33 classes.

Both end in a global average pool, so any input height (mel bands) and width (frames)
works; ``model.embed(x)`` gives the pooled features the classifier sees (for search and
clustering). Each model keeps its constructor arguments in ``init_kwargs`` so the registry can
rebuild it from a state_dict alone.
"""

from __future__ import annotations

import torch
from torch import nn


class _Recorded(nn.Module):
    """Base class that remembers the keyword arguments a model was built with."""

    init_kwargs: dict

    def _record(self, **kwargs) -> None:
        self.init_kwargs = dict(kwargs)


class BirdCNN(_Recorded):
    """Three conv stages (3x3 conv, batch norm, ReLU, 2x2 max pool), global pool, linear.

    ``width``: channels of the first stage (doubled at each stage); ``dropout`` before the
    linear layer. About 6 k parameters at width 8, 23 k at width 16.
    """

    def __init__(self, n_classes: int, in_channels: int = 1, width: int = 16, dropout: float = 0.2):
        super().__init__()
        self._record(n_classes=n_classes, in_channels=in_channels, width=width, dropout=dropout)
        self.n_classes = n_classes
        layers: list[nn.Module] = []
        channels = in_channels
        for stage in range(3):
            out = width * 2**stage
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features (B, 4 * width): what the classifier sees."""
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(x)))


class SqueezeExcite(nn.Module):
    """Channel gating from the globally pooled activations (squeeze-excitation)."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = torch.sigmoid(self.expand(nn.functional.silu(self.reduce(scale))))
        return x * scale


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, squeeze-excitation, 1x1 project.

    The residual connection applies when the block keeps the shape (stride 1, same
    channels). The squeeze width is a quarter of the block's input channels, as in
    EfficientNet.
    """

    def __init__(self, c_in: int, c_out: int, *, expansion: int, kernel: int, stride: int):
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.SiLU(inplace=True),
            SqueezeExcite(hidden, max(1, c_in // 4)),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


#: (output channels, kernel, stride, expansion) of the 11 MBConv blocks of BirdCNN_v5c.
#: The old source fixes the stem, the block count, expansion 8, the channel range 20..384,
#: the head and the total (about 8.0 M at 33 classes); the channels in between are
#: EfficientNet-like steps chosen to land on that total (7.97 M).
V5C_BLOCKS = (
    (20, 3, 1, 1),
    (40, 3, 2, 8),
    (40, 3, 1, 8),
    (80, 5, 2, 8),
    (80, 5, 1, 8),
    (160, 3, 2, 8),
    (160, 3, 1, 8),
    (272, 5, 1, 8),
    (272, 5, 1, 8),
    (336, 5, 2, 8),
    (384, 3, 1, 8),
)


class BirdCNNv5c(_Recorded):
    """The old ChirpID "BirdCNN_v5c": stem 3x3/2 to 40 channels, 11 MBConv blocks with
    squeeze-excitation (expansion 8 after the first, channels 20..384), 1x1 head to 1536,
    global average pool, dropout 0.6, linear. 1x224x313 inputs in the old recipe.
    """

    def __init__(self, n_classes: int = 33, in_channels: int = 1, dropout: float = 0.6):
        super().__init__()
        self._record(n_classes=n_classes, in_channels=in_channels, dropout=dropout)
        self.n_classes = n_classes
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 40, 3, 2, 1, bias=False), nn.BatchNorm2d(40),
                                  nn.SiLU(inplace=True))
        blocks = []
        c_in = 40
        for c_out, kernel, stride, expansion in V5C_BLOCKS:
            blocks.append(MBConv(c_in, c_out, expansion=expansion, kernel=kernel, stride=stride))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(c_in, 1536, 1, bias=False), nn.BatchNorm2d(1536), nn.SiLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1536, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate features (B, 1536): what the classifier sees."""
        return self.pool(self.head(self.blocks(self.stem(x)))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(x)))


#: The architectures the registry and the CLI build by name. A model folder names one of
#: these; nothing else is ever imported or called on its say-so.
MODELS: dict[str, type[nn.Module]] = {"birdcnn": BirdCNN, "birdcnn_v5c": BirdCNNv5c}

#: Constructor argument types a model folder may hold (JSON's plain values).
_PLAIN = (bool, int, float, str, type(None))


def register_model(name: str, cls: type[nn.Module]) -> None:
    """Make ``cls`` buildable by ``name`` (in ``build_model``, the registry, ``train
    --model``), by an explicit call in your code: model folders can only name architectures
    registered this way. ``cls(n_classes=..., **kwargs)`` must build it, and its constructor
    arguments must be plain values (numbers, strings, booleans, None)."""
    import re

    from ..errors import ConfigError

    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name or ""):
        raise ConfigError(f"model name {name!r}: use lower-case letters, digits, '.', '_' and '-'")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"register_model({name!r}, ...): {cls!r} is not a torch.nn.Module class")
    if MODELS.get(name, cls) is not cls:
        raise ConfigError(f"model name {name!r} is taken by {MODELS[name].__qualname__}; choose another name")
    MODELS[name] = cls


def architecture_of(model: nn.Module) -> str:
    """The registered name of ``model``'s class (unwrapping ``torch.compile``)."""
    from ..errors import ConfigError

    cls = type(getattr(model, "_orig_mod", model))
    for name, known in MODELS.items():
        if known is cls:
            return name
    raise ConfigError(f"{cls.__qualname__} is not a registered architecture ({', '.join(MODELS)}); register it "
                      "first with chirpid_io.trainers.register_model(name, cls)")


def build_model(name: str, n_classes: int, **kwargs) -> nn.Module:
    """A model from ``MODELS`` by name, its arguments checked against its constructor."""
    from ..errors import ConfigError

    cls = MODELS.get(str(name).lower())
    if cls is None:
        raise ConfigError(f"unknown model architecture {name!r}; known: {', '.join(MODELS)} (others must be "
                          "registered in code with chirpid_io.trainers.register_model)")
    return cls(**check_model_kwargs(name, cls, {"n_classes": n_classes, **kwargs}))


def check_model_kwargs(name: str, cls: type, kwargs: dict) -> dict:
    """``kwargs`` if each is a parameter of ``cls`` with a plain value of its annotated
    type; a ConfigError naming the argument otherwise."""
    import inspect
    import typing

    from ..errors import ConfigError

    if not isinstance(kwargs, dict):
        raise ConfigError(f"model {name!r}: constructor arguments must be a mapping, got {type(kwargs).__name__}")
    parameters = inspect.signature(cls.__init__).parameters
    hints = typing.get_type_hints(cls.__init__)
    for key, value in kwargs.items():
        param = parameters.get(key)
        if key == "self" or param is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            known = ", ".join(p for p in parameters if p != "self")
            raise ConfigError(f"model {name!r} has no constructor argument {key!r} (it takes {known})")
        if not isinstance(value, _PLAIN):
            raise ConfigError(f"model {name!r}: argument {key}={value!r} is not a plain value")
        if key in hints:  # "int", "float | None" ...: the union's members, or the type itself
            allowed = typing.get_args(hints[key]) or (hints[key],)
        else:
            allowed = _PLAIN
        if not any(_is(value, kind) for kind in allowed):
            want = " or ".join(getattr(a, "__name__", str(a)) for a in allowed)
            raise ConfigError(f"model {name!r}: argument {key}={value!r} should be {want}")
    return dict(kwargs)


def _is(value, kind) -> bool:
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(kind, type) and isinstance(value, kind)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
