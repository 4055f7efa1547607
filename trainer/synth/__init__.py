"""Our own synthetic pedestrian data: street scenes, walking figures, a domain knob.

Nothing here is trained on or copied from a public dataset; every pixel is drawn
with NumPy and OpenCV from a seeded ``np.random.Generator``.
"""

from __future__ import annotations

from alscout.trainer.synth.domain import PRESETS, DomainConfig, domain_preset
from alscout.trainer.synth.figures import PAPER_DEFAULT_BOXES, draw_pedestrian
from alscout.trainer.synth.generate import (
    MIN_VISIBLE,
    VideoScene,
    generate_stills,
    generate_video,
    render_still,
)

__all__ = [
    "DomainConfig",
    "PRESETS",
    "domain_preset",
    "PAPER_DEFAULT_BOXES",
    "draw_pedestrian",
    "MIN_VISIBLE",
    "VideoScene",
    "render_still",
    "generate_stills",
    "generate_video",
]
