"""bench/oracle_heads.py: a perfect detector's maps put each person in the head its rule picks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alscout.runtime.detections import decode_detections
from alscout.trainer.data.annotations import Box, ImageRecord
from alscout.trainer.evaluation.caltech import EvalConfig, evaluate_records
from alscout.trainer.model import DetectorConfig
from alscout.trainer.targets import TargetConfig


def test_each_fit_rule_is_perfect_under_its_own_protocol_only(bench_script):
    oracle = bench_script("oracle_heads")
    # narrow people at 640x480: by height both train head 3 (80x50: (67/80)^2 = .70,
    # (80/90)^2 = .79); by IoU as given both train head 4 (55x31: .73 and .61)
    people = (Box(100, 100, 27, 67), Box(300, 100, 31, 90))
    record = ImageRecord(0, Path("frame.png"), 640, 480, people)
    detector = DetectorConfig()
    by_height = oracle.oracle_maps(record, detector, TargetConfig())
    as_given = oracle.oracle_maps(record, detector, TargetConfig(fit_aspect=None))
    for maps, head in ((by_height, 3), (as_given, 4)):
        assert np.flatnonzero(maps.max(axis=(1, 2)) > 0.5).tolist() == [head]
    standard, given = EvalConfig(), EvalConfig(aspect_ratio=None)

    def miss_rate(maps: np.ndarray, protocol: EvalConfig) -> float:
        dets = [decode_detections(maps, threshold=0.1)]
        return evaluate_records(dets, [record], protocol).mr_at_fppi1

    assert miss_rate(by_height, standard) == 0.0 and miss_rate(as_given, given) == 0.0
    # crossed: as given, the 67 px person's 80x50 box overlaps it by .45; standardised,
    # the 90 px person's 55 px box by (55/90)^2 = .37
    assert miss_rate(by_height, given) == 0.5 and miss_rate(as_given, standard) == 0.5
