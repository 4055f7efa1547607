"""Selection methods of the experiments: the paper's, its baselines and its ablations.

A method is a scorer (how a frame's image score z is computed: an acquisition
function of :data:`alscout.runtime.acquisition.ACQUISITIONS`, the one registry the
vehicle shares) and a chooser (how b frames are picked from the scores, SPEC §2a).
Scorers run in the driver (the runtime pipeline); this module only picks, from scores
it is given, skipping frames the quality gate held back (``gated``).

| name | score | aggregation | smoothing | temporal rules |
| --- | --- | --- | --- | --- |
| divergence | eq. 1-4 | max-pool | yes | yes |
| entropy | sum_k H(p_k) | max-pool | yes | yes |
| mc_dropout | MC-dropout divergence | max-pool | yes | yes |
| least_confidence | max over detections of 1 - max(c, 1 - c) | | yes | yes |
| instance_count | detections above the count threshold | | yes | yes |
| divergence_count | divergence x (1 + instance count) | max-pool | yes | yes |
| difficulty | learned difficulty map (DEAL) | max-pool | yes | yes |
| divergence_mean | eq. 1-4 | mean | yes | yes |
| divergence_no_smoothing | eq. 1-4 | max-pool | no | yes |
| divergence_no_rules | eq. 1-4 | max-pool | yes | no |
| guided_random | none | | | yes (random order) |
| random | none | | | no |

For still images (no time axis) smoothing and temporal rules do not apply: scored
methods take the top b, guided random equals random.

``difficulty`` scores with the detector's learned difficulty head (docs/detector.md),
so its detector needs one: an experiment whose methods include it trains ``w_l`` with
the head (``ExperimentConfig``), and every finetune from ``w_l`` keeps and trains it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from alscout.errors import ConfigError, InvalidInputError
from alscout.runtime.acquisition import ACQUISITIONS
from alscout.runtime.temporal import (
    select_guided_random,
    select_random,
    select_top,
    select_video,
    smooth,
)

__all__ = ["Method", "METHODS", "TemporalRules", "choose"]


@dataclass(frozen=True)
class Method:
    """``score``: a name of :data:`~alscout.runtime.acquisition.ACQUISITIONS`, or ""
    (random methods). ``aggregation``: "maxpool" | "mean" (pixel scores).
    ``smoothing``/``rules``: SPEC §2a's steps. ``guided``: for random methods, whether
    the temporal rules apply."""

    name: str
    score: str = ""
    aggregation: str = "maxpool"
    smoothing: bool = True
    rules: bool = True
    guided: bool = False

    def __post_init__(self) -> None:
        if self.score and self.score not in ACQUISITIONS:
            raise ConfigError(
                f"method {self.name}: unknown score {self.score!r}; choose from "
                f"{sorted(ACQUISITIONS)}"
            )

    @property
    def scored(self) -> bool:
        """Whether the method needs image scores of the pool."""
        return bool(self.score)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("divergence", score="divergence"),
        Method("entropy", score="entropy"),
        Method("mc_dropout", score="mc_dropout"),
        Method("least_confidence", score="least_confidence"),
        Method("instance_count", score="instance_count"),
        Method("divergence_count", score="divergence_count"),
        Method("difficulty", score="difficulty"),
        Method("divergence_mean", score="divergence", aggregation="mean"),
        Method("divergence_no_smoothing", score="divergence", smoothing=False),
        Method("divergence_no_rules", score="divergence", rules=False),
        Method("guided_random", guided=True),
        Method("random"),
    )
}


@dataclass(frozen=True)
class TemporalRules:
    """SPEC §2a's smoothing (``dt``, ``sigma``) and exclusion (``dt1``, ``dt2``), in frames."""

    dt: int = 5
    sigma: float = 2.5
    dt1: int = 15
    dt2: int = 2


def choose(
    method: Method,
    budget: int,
    sequences: Sequence[np.ndarray],
    rng: np.random.Generator,
    z: np.ndarray | None = None,
    rules: TemporalRules | None = None,
    earlier: Sequence[int] = (),
    labeled: Sequence[int] = (),
    video: bool = True,
    gated: Sequence[int] = (),
) -> list[int]:
    """Pick up to ``budget`` pool positions with ``method``.

    Args:
        method: one of :data:`METHODS`.
        budget: b, >= 0.
        sequences: pool positions of each recording, in frame order (stills: one
            group; its order does not matter).
        rng: seeded generator of the random methods.
        z: image scores ``[P]`` of every pool position (scored methods only).
        rules: smoothing and exclusion; default SPEC's.
        earlier: positions picked in earlier cycles (the dt2 rule).
        labeled: positions already labeled (never picked again).
        video: whether frame order is time; False ignores smoothing and rules.
        gated: positions the quality gate held back: never picked, and (like labeled
            frames) they do not keep their neighbours from being picked.

    Returns:
        Picked pool positions in pick order.
    """
    rules = rules or TemporalRules()
    n = sum(len(s) for s in sequences)
    if method.scored and (z is None or len(z) != n):
        raise InvalidInputError(f"method {method.name} needs scores z of all {n} pool frames")
    if gated:
        labeled = sorted({*(int(p) for p in labeled), *(int(p) for p in gated)})
    if not video:
        if method.scored:
            return select_top(np.asarray(z), budget, labeled=labeled)
        return select_random(n, budget, rng, labeled=labeled)
    if not method.scored and not method.guided:
        return select_random(n, budget, rng, labeled=labeled)
    # Recordings laid end to end with gap frames between them, labeled so never picked,
    # wide enough that no exclusion window reaches across: one greedy pass over all.
    gap = max(rules.dt1, rules.dt2) + 1
    timeline: list[int] = []  # timeline slot -> pool position (-1: gap)
    for seq in sequences:
        if timeline:
            timeline.extend([-1] * gap)
        timeline.extend(int(p) for p in seq)
    slots = np.asarray(timeline, np.int64)
    slot_of = {int(p): i for i, p in enumerate(slots) if p >= 0}
    blocked = [i for i, p in enumerate(slots) if p < 0] + [slot_of[int(p)] for p in labeled]
    before = [slot_of[int(p)] for p in earlier]
    dt1, dt2 = (rules.dt1, rules.dt2) if method.rules else (0, 0)
    if method.scored:
        scores = np.asarray(z, np.float64)
        line = np.full(len(slots), float(scores.min()) if n else 0.0)
        for seq in sequences:
            idx = np.asarray(seq, np.int64)
            values = scores[idx]
            if method.smoothing and len(idx):
                values = smooth(values, dt=rules.dt, sigma=rules.sigma)
            line[[slot_of[int(p)] for p in idx]] = values
        picks = select_video(line, budget, dt=0, dt1=dt1, dt2=dt2, earlier=before, labeled=blocked)
    else:
        picks = select_guided_random(
            len(slots), budget, rng, dt1=dt1, dt2=dt2, earlier=before, labeled=blocked
        )
    return [int(slots[i]) for i in picks]
