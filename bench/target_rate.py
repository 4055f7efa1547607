"""Does a shipped threshold hold its target flag rate on video calibration never saw?

For each fold, a copy of the model is calibrated on one frame range of a video
(``alscout calibrate``) and another range is scored off-line with ``--target-rate``
(``alscout score``, the serving rule: the shipped threshold from the first frame, then
the adaptive one after ``min_history`` frames). Printed per fold: the thresholds
shipped, the flag rate over the scored range and over each quarter of it, and the
frame of the first flag. ``--swap`` adds the fold with the two ranges exchanged::

    .venv/bin/python bench/target_rate.py --model heads50.onnx \\
        --video ../shared/data/pets09_s2l1/vtest.avi --calibration 1-300 --test 301-795 \\
        --rate 1% --swap

Frames are written as JPEG (quality 90) folders under ``--work`` (a temporary folder
by default), as a logger would store them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import onnx

from alscout.apps.cli import main as alscout
from alscout.runtime.model_info import CALIBRATION_KEY, FlagCalibration
from alscout.runtime.shipped_thresholds import parse_rate
from alscout.trainer.cli_train import parse_range

#: Parts of the scored range whose flag rates are printed (quarters).
PARTS = 4


@dataclass(frozen=True)
class FoldResult:
    """One fold: where it calibrated and scored, what it shipped, what it flagged."""

    calibration: tuple[int, int]
    test: tuple[int, int]
    thresholds: dict[float, float]
    flagged: list[int]  # positions in the scored range, 0-based
    frames: int
    warming_up: int

    def rate(self, start: int = 0, stop: int | None = None) -> float:
        stop = self.frames if stop is None else stop
        return sum(start <= f < stop for f in self.flagged) / max(stop - start, 1)

    def row(self, rate: float) -> str:
        bounds = [round(i * self.frames / PARTS) for i in range(PARTS + 1)]
        parts = " / ".join(f"{100 * self.rate(a, b):.2f}" for a, b in itertools.pairwise(bounds))
        first = self.flagged[0] if self.flagged else "-"
        shipped = self.thresholds.get(rate, float("nan"))
        return (
            f"| {_span(self.calibration)} | {_span(self.test)} | {shipped:.4f} | "
            f"{len(self.flagged)} of {self.frames} | {100 * self.rate():.2f} | {parts} | "
            f"{first} | {self.warming_up} |"
        )


def _span(frames: tuple[int, int]) -> str:
    return f"{frames[0]}-{frames[1]}"


def write_frames(video: Path, frames: tuple[int, int], folder: Path) -> int:
    """Frames ``frames`` (1-based, inclusive) of ``video`` as JPEG files; their count."""
    folder.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise SystemExit(f"{video}: cannot open the video")
    written, index = 0, 0
    try:
        while index < frames[1]:
            ok, bgr = capture.read()
            if not ok:
                break
            index += 1
            if index >= frames[0]:
                cv2.imwrite(str(folder / f"{index:06d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
                written += 1
    finally:
        capture.release()
    if written == 0:
        raise SystemExit(f"{video}: no frames in {_span(frames)}")
    return written


def run_fold(
    model: Path,
    video: Path,
    calibration: tuple[int, int],
    test: tuple[int, int],
    rate: float,
    work: Path,
    threads: int,
) -> FoldResult:
    """Calibrate a copy of ``model`` on ``calibration``, score ``test`` at ``rate``."""
    fold = work / f"{_span(calibration)}_to_{_span(test)}"
    shutil.rmtree(fold, ignore_errors=True)
    calibration_dir, test_dir = fold / "calibration", fold / "test"
    write_frames(video, calibration, calibration_dir)
    write_frames(video, test, test_dir)
    calibrated = fold / "model.onnx"
    shutil.copyfile(model, calibrated)
    argv = ["calibrate", "--model", str(calibrated), "--frames", str(calibration_dir)]
    argv += ["--rates", "0.5%", "1%", "2%", f"{rate:g}", "--threads", str(threads)]
    if alscout([*argv, "--no-progress"]) != 0:
        raise SystemExit(f"alscout calibrate failed on {calibration_dir}")
    metadata = {p.key: p.value for p in onnx.load(str(calibrated)).metadata_props}
    thresholds = dict(FlagCalibration.from_json(metadata[CALIBRATION_KEY]).thresholds)
    out = fold / "scored"
    argv = ["score", str(test_dir), "--model", str(calibrated), "--out", str(out)]
    argv += ["--target-rate", f"{rate:g}", "--workers", "1", "--threads", str(threads)]
    if alscout([*argv, "--no-progress"]) != 0:
        raise SystemExit(f"alscout score failed on {test_dir}")
    lines = (out / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
    decisions = [json.loads(line) for line in lines]
    return FoldResult(
        calibration=calibration,
        test=test,
        thresholds=thresholds,
        flagged=[i for i, d in enumerate(decisions) if d["decision"] == "flagged"],
        frames=len(decisions),
        warming_up=sum(d["reason"] == "warming_up" for d in decisions),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="ONNX model (not modified)")
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--calibration", type=parse_range, required=True, help="frames A-B")
    parser.add_argument("--test", type=parse_range, required=True, help="frames C-D")
    parser.add_argument("--rate", type=parse_rate, default=0.01, help="target (default 1%%)")
    parser.add_argument("--swap", action="store_true", help="also the fold the other way")
    parser.add_argument("--work", type=Path, help="folder for frames and outputs (kept)")
    parser.add_argument("--threads", type=int, default=1, help="inference threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    folds = [(args.calibration, args.test)]
    if args.swap:
        folds.append((args.test, args.calibration))
    with tempfile.TemporaryDirectory(prefix="target-rate-") as scratch:
        work = args.work or Path(scratch)
        results = [
            run_fold(args.model, args.video, a, b, args.rate, work, args.threads) for a, b in folds
        ]
    print(f"target rate {100 * args.rate:g}%, model {args.model.name}, video {args.video.name}")
    print()
    print(
        "| calibration frames | scored frames | shipped threshold | flagged | rate % | "
        "rate % by quarter | first flag | warming_up |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for result in results:
        print(result.row(args.rate))


if __name__ == "__main__":
    main()
