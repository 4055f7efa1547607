"""The pedestrian detector of Aghdam et al. (ICCV 2019, §3 "Network architecture").

An encoder of ENet-style downsampling blocks and Fire residual modules, a top-down
decoder with lateral connections (FPN-like), and K prediction blocks on the decoder
levels, coarsest first. Every block is a 1x1 convolution to ``head_channels``
followed by ONE logits layer whose weights all blocks share; logits are upsampled
bilinearly to the input size and pass through a sigmoid, one map per head.

Head ``k`` (0-based) answers "is this pixel the centre of a pedestrian that fits
default box ``k``?" Head 0 sits on the coarsest level and covers the largest box.
The layout is written down in ``docs/detector.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from alscout.errors import ConfigError, InvalidInputError
from alscout.runtime.detections import NMS_CONTAINED, NMS_IOU
from alscout.trainer.evaluation.detections import DEFAULT_BOXES as PAPER_DEFAULT_BOXES

__all__ = [
    "DetectorConfig",
    "Detector",
    "DetectorLogits",
    "DetectorDifficultyLogits",
    "DetectorWithDifficulty",
    "export_module",
    "logits_module",
    "normalise",
    "predict_probs",
    "detect",
    "PAPER_DEFAULT_BOXES",
]

log = logging.getLogger(__name__)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DetectorConfig:
    """Architecture and input contract of a :class:`Detector`; validated on construction.

    ``width``: base channels (the stem's output); levels use up to ``8 * width``.
    ``default_boxes``: one (height, width) per head in pixels at ``reference_size``
    (height, width) = (480, 640). ``mean``/``std``: per RGB channel, applied to
    images scaled to [0, 1]. ``dropout``: rate used in training (0 = none); MC
    dropout may use another rate at inference. ``norm``: "group" (batch-independent,
    so data-parallel runs equal single-process runs) or "batch".
    ``difficulty_head``: add the learned difficulty head (DEAL; :class:`Detector`,
    docs/detector.md): a light branch on the finest decoder level that predicts where
    the detector errs, exported as a second output ``difficulty``.
    """

    width: int = 16
    num_heads: int = 5
    default_boxes: tuple[tuple[float, float], ...] = PAPER_DEFAULT_BOXES
    reference_size: tuple[int, int] = (480, 640)
    fires_per_level: int = 2
    decoder_channels: int = 0  # 0 means 4 * width
    head_channels: int = 128
    dropout: float = 0.0
    norm: str = "group"
    mean: tuple[float, float, float] = _IMAGENET_MEAN
    std: tuple[float, float, float] = _IMAGENET_STD
    name: str = "alscout-pedestrian"
    version: str = "0"
    difficulty_head: bool = False

    def __post_init__(self) -> None:
        # Values that arrive from JSON or TOML come as lists; store tuples.
        boxes = tuple((float(h), float(w)) for h, w in self.default_boxes)
        object.__setattr__(self, "default_boxes", boxes)
        object.__setattr__(self, "reference_size", tuple(int(v) for v in self.reference_size))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.width < 1 or self.head_channels < 1 or self.decoder_channels < 0:
            raise ConfigError("width and head_channels must be >= 1, decoder_channels >= 0")
        if self.num_heads < 1:
            raise ConfigError(f"num_heads must be >= 1, got {self.num_heads}")
        if len(boxes) != self.num_heads:
            raise ConfigError(
                f"default_boxes has {len(boxes)} boxes but num_heads is {self.num_heads}"
            )
        if any(not (h > 0 and w > 0) for h, w in boxes):
            raise ConfigError(f"default boxes need positive sides, got {boxes}")
        if len(self.reference_size) != 2 or min(self.reference_size) < 1:
            raise ConfigError(f"reference_size must be (height, width) >= 1: {self.reference_size}")
        if self.fires_per_level < 0:
            raise ConfigError(f"fires_per_level must be >= 0, got {self.fires_per_level}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm not in ("group", "batch"):
            raise ConfigError(f"norm must be 'group' or 'batch', got {self.norm!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("mean and std need 3 values (RGB) and std must be > 0")
        if not isinstance(self.difficulty_head, bool):
            raise ConfigError(
                f"difficulty_head must be true or false, got {self.difficulty_head!r}"
            )

    @property
    def decoder_width(self) -> int:
        """Channels of every decoder level."""
        return self.decoder_channels or 4 * self.width

    @property
    def head_strides(self) -> tuple[int, ...]:
        """Each head's stride in input pixels, head 0 (the coarsest level) first:
        ``2 ** (K + 1 - k)`` (64, 32, 16, 8, 4 for K = 5)."""
        return tuple(2 ** (self.num_heads + 1 - k) for k in range(self.num_heads))

    def boxes_at(self, height: int, width: int) -> np.ndarray:
        """Default boxes scaled to an input of ``height x width`` pixels: ``[K, 2]`` (h, w)."""
        ref_h, ref_w = self.reference_size
        boxes = np.asarray(self.default_boxes, dtype=np.float64)
        return boxes * np.array([height / ref_h, width / ref_w])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DetectorConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`.

        Missing keys keep their defaults: checkpoints written before a field existed
        (``difficulty_head``) still load, as detectors without it.
        """
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown detector config keys: {sorted(unknown)}")
        return cls(**values)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class Downsample(nn.Module):
    """ENet's initial block: a strided 3x3 conv concatenated with a 2x2 max-pool.

    ``[N, C_in, H, W] -> [N, C_out, ceil(H/2), ceil(W/2)]`` for any H, W >= 1.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        if out_channels <= in_channels:
            raise ConfigError("a downsampling block must add channels")
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, 2, 1, bias=False)
        # ceil_mode gives ceil(H/2) like the padded conv, so odd sizes line up.
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.norm = _norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class FireResidual(nn.Module):
    """SqueezeNet's Fire module (squeeze 1x1, expand 1x1 + 3x3) with a residual add.

    ``[N, C, H, W] -> [N, C, H, W]``; squeeze to ``C // 4``, expand to ``C // 2`` each.
    """

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        squeeze = max(1, channels // 4)
        expand3 = channels // 2
        expand1 = channels - expand3
        self.squeeze = nn.Conv2d(channels, squeeze, 1, bias=False)
        self.squeeze_norm = _norm(norm, squeeze)
        self.expand1 = nn.Conv2d(squeeze, expand1, 1, bias=False)
        self.expand3 = nn.Conv2d(squeeze, expand3, 3, padding=1, bias=False)
        self.expand_norm = _norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.squeeze_norm(self.squeeze(x)))
        y = self.expand_norm(torch.cat([self.expand1(s), self.expand3(s)], dim=1))
        return F.relu(x + y)


class SwitchableDropout(nn.Module):
    """Element-wise dropout active in training, or at inference when MC dropout is on."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate
        self.mc_rate: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mc_rate is not None:
            return F.dropout(x, self.mc_rate, training=True)
        if self.training and self.rate > 0:
            return F.dropout(x, self.rate, training=True)
        return x


class Detector(nn.Module):
    """Encoder-decoder pedestrian detector with K prediction heads (SPEC §3).

    ``forward(images [N, 3, H, W] float32, normalised) -> probs [N, K, H, W]`` in
    [0, 1], at the input's resolution, for any H, W >= 1 (32 and up is sensible).

    With ``config.difficulty_head`` a second branch (DEAL's difficulty head) reads the
    finest decoder level: a 3x3 convolution to ``decoder_width // 4`` channels (at
    least 4), ReLU, a 1x1 convolution to one logit, upsampled bilinearly to the input
    size like the heads; its sigmoid ``difficulty [N, 1, H, W]`` says how likely the
    detector errs at each pixel (:mod:`alscout.trainer.difficulty` makes its target).
    Its input is **detached**: the difficulty loss trains the branch only and never
    reaches the encoder-decoder, so a detector with the head learns exactly the
    weights it would learn without it (the acquisition function must not change the
    model it scores). :meth:`forward` still returns ``probs`` only;
    :meth:`forward_with_difficulty` returns both from one pass.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DetectorConfig()
        w, k, norm = config.width, config.num_heads, config.norm
        # Stem to stride 2, then K levels at strides 4, 8, ..., 2 ** (K + 1).
        self.stem = Downsample(3, max(w, 4), norm)
        channels = [max(w, 4)]
        levels = []
        for i in range(1, k + 1):
            out = w * 2 ** min(i, 3)
            if out <= channels[-1]:  # a downsampling block must add channels
                out = channels[-1] + w
            blocks: list[nn.Module] = [Downsample(channels[-1], out, norm)]
            blocks += [FireResidual(out, norm) for _ in range(config.fires_per_level)]
            levels.append(nn.Sequential(*blocks))
            channels.append(out)
        self.levels = nn.ModuleList(levels)
        d = config.decoder_width
        # Laterals for levels K..1 (coarsest first); the top one starts the decoder.
        self.laterals = nn.ModuleList(nn.Conv2d(c, d, 1) for c in reversed(channels[1:]))
        self.merges = nn.ModuleList(FireResidual(d, norm) for _ in range(k - 1))
        self.dropout = SwitchableDropout(config.dropout)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(d, config.head_channels, 1), nn.ReLU(inplace=True))
            for _ in range(k)
        )
        self.logits = nn.Conv2d(config.head_channels, 1, 1)  # shared by every block
        assert self.logits.bias is not None  # Conv2d's default bias=True
        # Start near the N2P prior (1 positive per 15 negatives) so early steps are calm.
        nn.init.constant_(self.logits.bias, -float(np.log(15.0)))
        # Built last, so the detector's own layers draw the same initial weights with or
        # without it (under the same torch seed).
        self.difficulty: nn.Sequential | None = None
        if config.difficulty_head:
            hidden = max(4, d // 4)
            self.difficulty = nn.Sequential(
                nn.Conv2d(d, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1)
            )

    @property
    def has_difficulty(self) -> bool:
        """Whether the model has the learned difficulty head."""
        return self.difficulty is not None

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Decoder maps, coarsest first: K tensors ``[N, D, H / 2**(K+1-k), ...]``."""
        x = self.stem(images)
        skips = []
        for level in self.levels:
            x = level(x)
            skips.append(x)
        skips.reverse()
        d = self.laterals[0](skips[0])
        out = [d]
        for lateral, merge, skip in zip(self.laterals[1:], self.merges, skips[1:], strict=True):
            # Resize to the lateral's own size: odd sizes make 2x upsampling miss by one.
            up = F.interpolate(d, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            d = merge(lateral(skip) + up)
            out.append(d)
        return out

    def forward_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, K, H, W]`` at the input's resolution (before the sigmoid)."""
        return self._head_logits(self.features(images), images.shape[-2:])

    def _head_logits(self, decoded: list[torch.Tensor], size: Sequence[int]) -> torch.Tensor:
        maps = [
            self.logits(block(self.dropout(f)))
            for block, f in zip(self.blocks, decoded, strict=True)
        ]
        up = [F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
        return torch.cat(up, dim=1)

    def forward_logits_with_difficulty(
        self, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Head logits ``[N, K, H, W]`` and difficulty logits ``[N, 1, H, W]``, one pass.

        The difficulty branch reads the finest decoder level *detached* (no gradient
        flows from it into the encoder-decoder) and without dropout. Needs the head.
        """
        if self.difficulty is None:
            raise InvalidInputError(
                "this detector has no difficulty head (DetectorConfig.difficulty_head)"
            )
        decoded = self.features(images)
        size = images.shape[-2:]
        difficulty = self.difficulty(decoded[-1].detach())
        up = F.interpolate(difficulty, size=size, mode="bilinear", align_corners=False)
        return self._head_logits(decoded, size), up

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[N, K, H, W]`` in [0, 1]; one sigmoid per head."""
        return torch.sigmoid(self.forward_logits(images))

    def forward_with_difficulty(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``probs [N, K, H, W]`` and ``difficulty [N, 1, H, W]``, both in [0, 1], one pass."""
        logits, difficulty = self.forward_logits_with_difficulty(images)
        return torch.sigmoid(logits), torch.sigmoid(difficulty)

    def enable_mc_dropout(self, enabled: bool = True, rate: float | None = None) -> None:
        """Keep dropout active at inference (MC dropout, SPEC §1) or switch it back off.

        ``rate`` defaults to the training rate, or 0.5 (SPEC's default) when the
        model was trained without dropout. Other layers keep their mode.
        """
        if not enabled:
            self.dropout.mc_rate = None
            return
        chosen = rate if rate is not None else (self.config.dropout or 0.5)
        if not 0.0 < chosen < 1.0:
            raise InvalidInputError(f"MC dropout rate must be in (0, 1), got {chosen}")
        self.dropout.mc_rate = float(chosen)

    @torch.no_grad()
    def sample_probabilities(
        self, images: torch.Tensor, samples: int, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``samples`` MC-dropout passes sharing one encoder-decoder pass: ``[N, T, K, H, W]``.

        ``images``: ``[N, 3, H, W]`` float32, normalised. Dropout is the only
        stochastic layer and sits on the decoder maps, so :meth:`features` runs once
        and only dropout -> prediction blocks -> shared logits -> upsampling ->
        sigmoid run T times. Each pass draws its dropout masks over the whole batch,
        head by head, in the order of T sequential :meth:`forward` calls (for t, for
        k), so under the same torch seed the result equals
        ``stack([self(images) for _ in range(T)], 1)``: bit for bit for one image,
        to < 1e-6 for a batch. The blocks after dropout run one image at a time:
        PyTorch's CPU 1x1 convolution was 3-6x faster on a batch of one than on 16
        at 480x360 (measured); its sums are ordered differently, hence the 1e-6.
        Needs MC dropout on (:meth:`enable_mc_dropout`); probabilities in [0, 1].
        ``out``: a float32 tensor of the result's shape to write into (a caller
        scoring many batches keeps one and skips a large allocation per batch).
        """
        if samples < 1:
            raise InvalidInputError(f"samples must be >= 1, got {samples}")
        if not self.mc_dropout:
            raise InvalidInputError("sample_probabilities needs MC dropout: enable_mc_dropout()")
        if images.ndim != 4 or images.shape[1] != 3:
            raise InvalidInputError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
        decoded = self.features(images)
        n, _, height, width = images.shape
        size = (height, width)
        shape = (n, samples, self.config.num_heads, height, width)
        if out is None:
            out = images.new_empty(shape)
        elif tuple(out.shape) != shape or out.dtype != images.dtype:
            raise InvalidInputError(f"out must be {images.dtype} {shape}, got {tuple(out.shape)}")
        for t in range(samples):
            dropped = [self.dropout(f) for f in decoded]  # the masks of one forward pass
            for i in range(n):
                maps = [
                    self.logits(block(d[i : i + 1]))
                    for block, d in zip(self.blocks, dropped, strict=True)
                ]
                up = [
                    F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps
                ]
                torch.sigmoid(torch.cat(up, dim=1), out=out[i : i + 1, t])
        return out

    @property
    def mc_dropout(self) -> bool:
        """Whether MC dropout is on."""
        return self.dropout.mc_rate is not None

    def normalise(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """:func:`normalise` with this model's mean and std, on its device."""
        device = next(self.parameters()).device
        return normalise(images, self.config).to(device)


class DetectorLogits(nn.Module):
    """A detector seen as a logits model: ``forward(images) -> [N, K, H, W]`` logits.

    Training wraps this in DistributedDataParallel, whose gradient hooks run only
    through ``forward``; the detector's own ``forward`` keeps the export contract.
    """

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.detector.forward_logits(images)


class DetectorDifficultyLogits(nn.Module):
    """:class:`DetectorLogits` for a detector with the difficulty head:
    ``forward(images) -> (logits [N, K, H, W], difficulty logits [N, 1, H, W])``."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        if not detector.has_difficulty:
            raise InvalidInputError("DetectorDifficultyLogits needs a detector with the head")
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector.forward_logits_with_difficulty(images)


class DetectorWithDifficulty(nn.Module):
    """The module exported for a detector with the difficulty head:
    ``forward(images) -> (probs [N, K, H, W], difficulty [N, 1, H, W])``, the ONNX
    outputs ``probs`` and ``difficulty``."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        if not detector.has_difficulty:
            raise InvalidInputError("DetectorWithDifficulty needs a detector with the head")
        self.detector = detector
        self.config = detector.config

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector.forward_with_difficulty(images)


def logits_module(detector: Detector) -> nn.Module:
    """What training runs: :class:`DetectorLogits`, or, with the difficulty head,
    :class:`DetectorDifficultyLogits` (logits and difficulty logits from one pass)."""
    return (
        DetectorDifficultyLogits(detector) if detector.has_difficulty else DetectorLogits(detector)
    )


def export_module(detector: Detector) -> nn.Module:
    """What an export traces: the detector itself (``probs``), or, with the difficulty
    head, :class:`DetectorWithDifficulty` (``probs`` and ``difficulty``)."""
    return DetectorWithDifficulty(detector) if detector.has_difficulty else detector


def normalise(images: np.ndarray | torch.Tensor, config: DetectorConfig) -> torch.Tensor:
    """uint8 RGB ``[N, H, W, 3]`` (or one ``[H, W, 3]``) -> float32 ``[N, 3, H, W]``.

    Scales to [0, 1], then subtracts ``config.mean`` and divides by ``config.std``.
    """
    tensor = torch.as_tensor(images)
    if tensor.dtype != torch.uint8:
        raise InvalidInputError(f"normalise expects uint8 images, got {tensor.dtype}")
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise InvalidInputError(f"normalise expects [N, H, W, 3] images, got {tuple(tensor.shape)}")
    x = tensor.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(config.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


@torch.no_grad()
def predict_probs(
    model: Detector, images: np.ndarray, batch_size: int = 8, mirror: bool = False
) -> np.ndarray:
    """Probabilities of uint8 RGB ``images`` ``[N, H, W, 3]``: ``[N, K, H, W]`` float32.

    With ``mirror`` the mirrored images are run too and their maps, flipped back,
    averaged in (the paper's double evaluation).
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidInputError(f"images must be [N, H, W, 3] uint8, got {images.shape}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = model.normalise(images[start : start + batch_size])
        probs = model(x)
        if mirror:
            probs = 0.5 * (probs + model(x.flip(-1)).flip(-1))
        out.append(probs.float().cpu().numpy())
    k = model.config.num_heads
    return np.concatenate(out) if out else np.zeros((0, k, *images.shape[1:3]), np.float32)


def detect(
    model: Detector,
    images: Sequence[np.ndarray],
    input_size: tuple[int, int] | None = None,
    threshold: float = 0.05,
    nms_iou: float = NMS_IOU,
    mirror: bool = False,
    nms_contained: float = NMS_CONTAINED,
    box_size: str = "head",
    subpixel: bool = True,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pedestrian boxes in uint8 RGB ``[H, W, 3]`` images of one size (SPEC §3, "Detections").

    Each image is resized to ``input_size`` (height, width) when given, run through
    the model, decoded (local maxima of each head above ``threshold`` become boxes
    of the head's default size, merged with NMS at ``nms_iou`` and ``nms_contained``:
    :func:`~alscout.runtime.detections.decode_detections`, which also explains
    ``box_size``; with ``subpixel`` each box is centred on its peak's sub-pixel centre,
    from the model's ``head_strides``), and the boxes are
    scaled back to the image's pixels. Returns per image ``(boxes [M, 4] float32
    (x, y, w, h), scores [M] float32)``, by decreasing score.
    """
    from alscout.trainer.data.augment import resize_to
    from alscout.trainer.evaluation.detections import decode_detections

    if not len(images):
        return []
    height, width = images[0].shape[:2]
    if any(image.shape[:2] != (height, width) for image in images):
        raise InvalidInputError("detect needs images of one size; call it once per size")
    in_h, in_w = input_size or (height, width)
    # the same resizing as training (area when shrinking, bilinear when enlarging)
    batch = np.stack([resize_to(image, (), in_w, in_h)[0] for image in images])
    probs = predict_probs(model, batch, mirror=mirror)
    boxes_640 = [tuple(b) for b in model.config.boxes_at(480, 640)]  # decode's reference
    scale = np.array([width / in_w, height / in_h, width / in_w, height / in_h], np.float32)
    out = []
    strides = model.config.head_strides if subpixel else None
    for maps in probs:
        boxes, scores = decode_detections(
            maps,
            boxes_640,
            threshold,
            nms_iou,
            nms_contained=nms_contained,
            box_size=box_size,
            strides=strides,
        )
        out.append((boxes * scale, scores))
    return out
