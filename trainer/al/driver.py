"""The active-learning cycle driver (paper Fig. 1; SPEC §2a).

Per seed, ``w_l`` is trained once on the initial labeled set (``seed<s>/w0/``) and
shared by every method. Per seed and method (``seed<s>/<method>/``), each cycle:

1. export the current detector to ONNX and score the pool with the runtime pipeline;
2. pick b frames with the method, plus ``control`` random frames (the control slice);
3. label them through the oracle;
4. finetune from ``w_l`` on everything labeled so far;
5. evaluate on the test set (Caltech protocol).

A scored method also keeps, per cycle, z and the error counts of every unlabeled
pool frame (``cycle<c>/pool_frames.json``) and the two rank checks of
:mod:`alscout.trainer.al.stats` with their block-bootstrap intervals.

``state.json`` holds the finished cycles and is replaced atomically after each one;
a cycle's selection is kept in ``cycle<c>/selection.json`` before labeling, so a run
that pauses for a human labeling round (or is killed) resumes where it stopped, and
picks the same frames. Every random choice is seeded by (seed, cycle, method).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from alscout.errors import ConfigError
from alscout.files import write_atomic
from alscout.runtime.temporal import select_random
from alscout.trainer.al.config import ExperimentConfig
from alscout.trainer.al.data import count_instances, is_video, load_spec, sequences
from alscout.trainer.al.methods import METHODS, Method, TemporalRules, choose
from alscout.trainer.al.oracle import FileOracle, FleetOracle, GroundTruthOracle, Oracle
from alscout.trainer.al.outputs import POOL_FRAMES
from alscout.trainer.al.pool import PoolScores, export_model, score_pool
from alscout.trainer.al.stats import pool_rank_checks, rank_rng
from alscout.trainer.config import TrainConfig
from alscout.trainer.data.annotations import Dataset, ImageRecord

__all__ = ["Experiment", "run_experiment", "write_json_atomic", "STATE_FILE", "POOL_FRAMES"]

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` so that readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(value, indent=1).encode("utf-8"))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass
class Experiment:
    """The data sets of one experiment, loaded once."""

    config: ExperimentConfig
    initial: Dataset
    pool: Dataset
    test: Dataset
    video: bool
    sequences: list[np.ndarray]

    @classmethod
    def load(cls, config: ExperimentConfig) -> Experiment:
        """Read (or generate) the initial, pool and test sets."""
        cache = config.out / "data"
        pool = load_spec(config.pool, cache, "pool")
        needed = config.initial_checkpoint is None or config.include_initial
        initial = load_spec(config.initial, cache, "initial") if needed else Dataset(name="unused")
        return cls(
            config=config,
            initial=initial,
            pool=pool,
            test=load_spec(config.test, cache, "test"),
            video=is_video(config.pool, pool),
            sequences=sequences(pool),
        )

    def oracle(self) -> Oracle:
        if self.config.oracle == "files":
            return FileOracle(self.pool)
        if self.config.oracle == "fleet":
            return FleetOracle(self.pool)
        return GroundTruthOracle(self.pool)


def _evaluate(exp: Experiment, checkpoint: Path, out: Path) -> dict[str, float]:
    """Caltech evaluation of ``checkpoint`` on the test set; the curve goes to ``out``."""
    from alscout.trainer.checkpoint import load_checkpoint
    from alscout.trainer.training import evaluate

    state = load_checkpoint(checkpoint)
    ev = exp.config.evaluation
    input_size = state.train.input_size if state.train is not None else exp.config.train.input_size
    result, _ = evaluate(
        state.build_model(), exp.test, input_size, ev.threshold, ev.nms_iou, ev.mirror
    )
    result.to_json(out)
    return {"lamr": result.lamr, "mr_at_fppi1": result.mr_at_fppi1}


def _resumable_w_l(exp: Experiment, checkpoint: Path, train: TrainConfig) -> Path | None:
    """``checkpoint`` when it is a run of this very ``w_l``, to be resumed.

    A run killed mid-training resumes where it stopped; one that finished its epochs
    but was killed before ``done.json`` resumes with no epoch left to train. A
    checkpoint left by other settings or data (an earlier version of the recipe) is
    not resumed: ``w_l`` is trained again from the start, with a WARNING.
    """
    from alscout.trainer import checkpoint as ckpt
    from alscout.trainer.training import RUN_PLACE_FIELDS

    if not checkpoint.is_file():
        return None
    state = ckpt.load_checkpoint(checkpoint)
    place = {name: getattr(train, name) for name in RUN_PLACE_FIELDS}
    same = (
        state.train is not None
        and replace(state.train, **place) == train
        and state.detector == exp.config.detector
        and state.data_digest == ckpt.dataset_digest(exp.initial)
        and state.epoch <= train.epochs
    )
    if not same:
        log.warning("w_l checkpoint %s is from other settings: training w_l again", checkpoint)
        return None
    if state.epoch == train.epochs:
        log.info("w_l checkpoint %s has all %d epochs: not trained again", checkpoint, state.epoch)
    return checkpoint


def train_initial(exp: Experiment, seed: int) -> Path:
    """``w_l`` of ``seed`` (trained once, then reused); returns its checkpoint."""
    from alscout.trainer.training import fit

    folder = exp.config.out / f"seed{seed}" / "w0"
    done = folder / "done.json"
    if done.is_file():
        return folder / "last.pt"
    began = time.perf_counter()
    given = exp.config.initial_checkpoint
    if given is not None:
        if not given.is_file():
            raise ConfigError(f"initial_checkpoint {given} not found")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(given, folder / "last.pt.partial")
        os.replace(folder / "last.pt.partial", folder / "last.pt")
    else:
        train = exp.config.train.with_overrides(seed=seed)
        resume = _resumable_w_l(exp, folder / "last.pt", train)
        fit(exp.initial, exp.config.detector, train, out_dir=folder, resume=resume, progress=False)
    seconds = time.perf_counter() - began
    metrics = _evaluate(exp, folder / "last.pt", folder / "eval.json")
    write_json_atomic(
        done,
        {**metrics, "train_seconds": seconds, "images": len(exp.initial), "from": str(given or "")},
    )
    log.info("w_l seed=%d lamr=%.4f mr1=%.4f", seed, metrics["lamr"], metrics["mr_at_fppi1"])
    return folder / "last.pt"


def _rng(seed: int, cycle: int, method: Method) -> np.random.Generator:
    return np.random.default_rng([seed, cycle, zlib.crc32(method.name.encode())])


def _select(
    exp: Experiment,
    method: Method,
    seed: int,
    cycle: int,
    current: Path,
    cycle_dir: Path,
    earlier: list[int],
    labeled: list[int],
) -> dict[str, Any]:
    """Score the pool with the current detector and choose this cycle's frames."""
    cfg = exp.config
    rng = _rng(seed, cycle, method)
    model = export_model(current, cycle_dir / "model.onnx", version=f"seed{seed}-cycle{cycle - 1}")
    unlabeled = sorted(set(range(len(exp.pool))) - set(labeled))
    scores: PoolScores | None = None
    if method.scored:
        scores = _score(exp, model, unlabeled, method, current, seed)
    rules = TemporalRules(cfg.scoring.dt, cfg.scoring.sigma, cfg.scoring.dt1, cfg.scoring.dt2)
    z = None if scores is None else np.nan_to_num(scores.z, nan=0.0)
    gated = [] if scores is None else scores.low_quality
    picks = choose(
        method, cfg.budget, exp.sequences, rng, z, rules, earlier, labeled, exp.video, gated
    )
    control = select_random(len(exp.pool), cfg.control, rng, labeled=[*labeled, *picks])
    if scores is None:  # random methods: count errors on the chosen frames only
        scores = _score(exp, model, sorted([*picks, *control]), None, current, seed)
    errors = scores.errors
    ranks: dict[str, float] = {"spearman_z_errors": float("nan")}
    if method.scored:
        frames = _pool_frames(scores, unlabeled, len(exp.pool), cfg.evaluation.error_threshold)
        write_json_atomic(cycle_dir / POOL_FRAMES, frames)
        ranks = _rank_fields(frames, cycle, method.name)
    model.unlink(missing_ok=True)  # the checkpoint can make it again; keep disks small
    return {
        "picks": picks,
        "control": control,
        "scoring_seconds": scores.seconds if method.scored else 0.0,
        "scored_frames": scores.frames if method.scored else 0,
        "pick_errors": float(np.mean(errors[picks])) if picks else float("nan"),
        "control_errors": float(np.mean(errors[control])) if control else float("nan"),
        **ranks,
        "pick_z": [float(scores.z[p]) for p in picks] if method.scored else [],
        **({"low_quality": gated} if cfg.scoring.quality_gate else {}),
    }


def _pool_frames(
    scores: PoolScores, positions: list[int], pool_size: int, threshold: float
) -> dict[str, Any]:
    """What the rank checks need, per unlabeled pool frame in pool (video) order."""
    at = np.asarray(positions, np.int64)
    gt = scores.ground_truth
    return {
        "pool_size": pool_size,
        "error_threshold": threshold,
        "positions": [int(p) for p in at],
        "z": [float(v) for v in scores.z[at]],
        "false_positives": [int(v) for v in scores.false_positives[at]],
        "false_negatives": [int(v) for v in scores.false_negatives[at]],
        "ground_truth": [-1] * len(at) if gt is None else [int(v) for v in gt[at]],
    }


def _rank_fields(frames: dict[str, Any], cycle: int, method: str) -> dict[str, float]:
    """This run's two rank checks (``alscout.trainer.al.stats``) as state fields:
    Spearman of z against FP + FN and against (FP + FN) / (GT + FP), with their
    block-bootstrap intervals."""
    checks = pool_rank_checks([frames], lambda: rank_rng(cycle, method))
    fields: dict[str, float] = {}
    for name, check in checks.items():
        key = "spearman_z_errors" if name == "errors" else "spearman_z_error_rate"
        fields |= {key: check.rho, f"{key}_low": check.low, f"{key}_high": check.high}
    return fields


def _score(
    exp: Experiment, model: Path, positions: list[int], method: Method | None, ckpt: Path, seed: int
) -> PoolScores:
    cfg = exp.config
    return score_pool(
        model, exp.pool, positions, method, cfg.scoring, cfg.evaluation,
        threads=cfg.threads, checkpoint=ckpt, seed=seed,
    )  # fmt: skip


def run_method(
    exp: Experiment, seed: int, method: Method, w0: Path, on_cycle: Callable[[str], None] | None
) -> dict[str, Any]:
    """All cycles of one method and seed (resuming finished ones); returns the state."""
    import torch

    from alscout.trainer.training import fit

    cfg = exp.config
    run_dir = cfg.out / f"seed{seed}" / method.name
    state_path = run_dir / STATE_FILE
    state = _read_json(state_path) or {
        "digest": cfg.digest(), "seed": seed, "method": method.name, "cycles": []
    }  # fmt: skip
    if state["digest"] != cfg.digest():
        raise ConfigError(
            f"{state_path} belongs to another configuration (digest {state['digest']}, now "
            f"{cfg.digest()}); use another out folder or delete it"
        )
    oracle = exp.oracle()
    picked: list[int] = []
    trained: list[int] = []
    labels: dict[int, ImageRecord] = {}
    for done in state["cycles"]:
        asked = done["picks"] + done["control"]
        cycle_dir = run_dir / f"cycle{done['cycle']:02d}"
        labels.update(zip(asked, oracle.label(asked, cycle_dir), strict=True))
        picked += done["picks"]
        trained += done["picks"] + (done["control"] if cfg.train_on_control else [])
    for cycle in range(len(state["cycles"]) + 1, cfg.cycles + 1):
        cycle_dir = run_dir / f"cycle{cycle:02d}"
        current = w0 if cycle == 1 else run_dir / f"cycle{cycle - 1:02d}" / "last.pt"
        selection = _read_json(cycle_dir / "selection.json")
        if selection is None:
            selection = _select(exp, method, seed, cycle, current, cycle_dir, picked, list(labels))
            write_json_atomic(cycle_dir / "selection.json", selection)
        picks, control = selection["picks"], selection["control"]
        asked = picks + control  # one labeling request per cycle
        labels.update(zip(asked, oracle.label(asked, cycle_dir), strict=True))
        new = picks + (control if cfg.train_on_control else [])
        records = [labels[p] for p in [*trained, *new]]
        base = list(exp.initial.images) if cfg.include_initial else []
        train_set = Dataset(base + records, name=f"{method.name}-seed{seed}-cycle{cycle}")
        torch.set_num_threads(cfg.threads)  # scoring may have changed it (shared OpenMP)
        began = time.perf_counter()
        fit(
            train_set, cfg.detector, cfg.finetune.with_overrides(seed=seed + 1000 * cycle),
            out_dir=cycle_dir, init=w0, progress=False,
        )  # fmt: skip
        train_seconds = time.perf_counter() - began
        metrics = _evaluate(exp, cycle_dir / "last.pt", cycle_dir / "eval.json")
        picked += picks
        trained += new
        state["cycles"].append(
            {
                "cycle": cycle,
                **selection,
                **metrics,
                "train_seconds": train_seconds,
                "labeled": len(trained),
                "instances": count_instances(exp.pool, picks),
                "instances_per_frame": (
                    count_instances(exp.pool, picks) / len(picks) if picks else float("nan")
                ),
                "control_instances": count_instances(exp.pool, control),
            }
        )
        write_json_atomic(state_path, state)
        message = (
            f"seed={seed} method={method.name} cycle={cycle}/{cfg.cycles} "
            f"MR@FPPI=1 {100 * metrics['mr_at_fppi1']:.2f}% LAMR {100 * metrics['lamr']:.2f}%"
        )
        log.info(message)
        if on_cycle is not None:
            on_cycle(message)
    return state


def run_experiment(config: ExperimentConfig, on_cycle: Callable[[str], None] | None = None) -> Path:
    """Run (or resume) every seed and method, then write the summary; returns its path."""
    import torch

    from alscout.trainer.al.outputs import write_outputs

    torch.set_num_threads(config.threads)
    exp = Experiment.load(config)
    log.info(
        "experiment=%s pool=%d video=%s initial=%d test=%d",
        config.name, len(exp.pool), exp.video, len(exp.initial), len(exp.test),
    )  # fmt: skip
    write_json_atomic(config.out / "config.json", {"digest": config.digest(), "name": config.name})
    for seed in config.seeds:
        w0 = train_initial(exp, seed)
        for name in config.methods:
            run_method(exp, seed, METHODS[name], w0, on_cycle)
    return write_outputs(config.out, config)
