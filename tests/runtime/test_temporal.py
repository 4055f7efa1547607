"""The public surface of alscout.runtime.temporal (SPEC §6) and its place on the vehicle."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import textwrap

import numpy as np

from alscout.runtime import temporal
from alscout.runtime.temporal import Decision, OnlineSelector, select_video, smooth


def defaults(function) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_spec_signatures_and_defaults() -> None:
    assert defaults(smooth) == {"dt": 5, "sigma": 2.5, "frames": None}
    assert defaults(select_video) == {
        "dt": 5, "sigma": 2.5, "dt1": 15, "dt2": 2, "earlier": (), "labeled": ()
    }  # fmt: skip
    assert list(inspect.signature(select_video).parameters)[:2] == ["z", "budget"]
    online = defaults(OnlineSelector)
    for name, value in {
        "dt": 5, "sigma": 2.5, "dt1": 15, "dt2": 2, "threshold": 0.0, "earlier": (),
        "max_flags": None, "per_frames": None,
    }.items():  # fmt: skip
        assert online[name] == value
    assert [f.name for f in dataclasses.fields(Decision)][:3] == ["frame", "flagged", "smoothed"]
    assert set(temporal.__all__) <= set(dir(temporal))


def test_spec_call_shapes() -> None:
    z = np.random.default_rng(0).random(120).astype(np.float32)
    zhat = smooth(z)
    assert zhat.shape == (120,) and zhat.dtype == np.float64
    picks = select_video(z, 3)
    assert len(picks) == 3 and all(isinstance(p, int) for p in picks)
    sel = OnlineSelector()
    decided = [d for t, s in enumerate(z) for d in sel.push(t, s)] + sel.finish()
    assert [d.frame for d in decided] == list(range(120))
    d = decided[0]
    assert isinstance(d.frame, int) and isinstance(d.flagged, bool)
    assert isinstance(d.smoothed, float)


def test_temporal_imports_without_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith(("torch.", "alscout.trainer")):
                    raise ImportError(f"{name} is not allowed on the vehicle")
        sys.meta_path.insert(0, Block())
        import numpy as np
        from alscout.runtime.temporal import SelectorConfig, flag_recording, select_video
        config = SelectorConfig(threshold="adaptive", history=20, min_history=5)
        flag_recording(np.arange(50.0), config)
        select_video(np.arange(50.0), 2)
        assert "torch" not in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_selector_from_a_config_equals_keyword_construction() -> None:
    from alscout.runtime.temporal import SelectorConfig

    z = np.random.default_rng(5).normal(size=400)
    config = SelectorConfig(dt=3, dt1=8, threshold=0.1, max_flags=3, per_frames=100)
    a = OnlineSelector.from_config(config, earlier=[40])
    b = OnlineSelector(3, 2.5, 8, 2, 0.1, [40], 3, 100)
    got = a.push_many(range(400), z) + a.finish()
    assert got == b.push_many(range(400), z) + b.finish()
    assert a.config == b.config == config and config.latency == 11
    assert sum(d.flagged for d in got) == a.n_flagged > 0
