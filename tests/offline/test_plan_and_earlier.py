"""Units of a run (ids as ``alscout stream`` derives them, collisions) and dt2 snapshots."""

from __future__ import annotations

import pytest
from recordings import write_video

from alscout.errors import ConfigError, DataError, InvalidInputError
from alscout.offline.earlier import EarlierUploads, from_outbox
from alscout.offline.plan import plan_units
from alscout.server.durable_outbox import DurableOutbox
from alscout.server.outbox import FlaggedFrame


def test_units_take_the_stream_ids_and_stable_unit_ids(tmp_path, monkeypatch):
    video = write_video(tmp_path / "drive 01.avi", 2, seed=0)
    (unit,) = plan_units([str(video)])
    assert (unit.recording_id, unit.camera_id) == ("drive_01", "cam0")
    assert unit.source == str(video)  # absolute: a re-run from elsewhere finds it
    monkeypatch.chdir(tmp_path)
    (again,) = plan_units(["drive 01.avi"])
    assert again.unit_id == unit.unit_id and unit.unit_id.startswith("drive_01-")
    (limited,) = plan_units([str(video)], max_frames=1)
    assert limited.unit_id != unit.unit_id  # other options: other frames, another unit
    (named,) = plan_units([str(video)], recording_id="r-7", camera_id="front")
    assert (named.recording_id, named.camera_id) == ("r-7", "front")
    (remote,) = plan_units(["s3://bucket/cars/7/bag-3.mcap?endpoint_url=http://h:9000"])
    assert (remote.recording_id, remote.camera_id) == ("bag-3", None)  # topic read later
    assert remote.resolve_camera("/cam/left") == "cam_left"


def test_bad_sources_and_collisions_are_refused(tmp_path):
    video = write_video(tmp_path / "a.avi", 2, seed=0)
    with pytest.raises(DataError, match="no such file or folder"):
        plan_units([str(tmp_path / "none.avi")])
    with pytest.raises(ConfigError, match="not live streams"):
        plan_units(["rtsp://10.0.0.2/live"])
    with pytest.raises(ConfigError, match="would both write stream r/cam0"):
        plan_units([str(video), str(tmp_path)], recording_id="r")
    with pytest.raises(ConfigError, match="would both write stream a/"):
        plan_units([str(video), "s3://bucket/a.mcap"])  # its camera is not known yet
    with pytest.raises(InvalidInputError, match="is not allowed"):
        plan_units([str(video)], camera_id="../x")


def test_the_outbox_snapshot_holds_what_the_server_would_not_flag_again(tmp_path):
    def flagged(recording: str, index: int) -> FlaggedFrame:
        return FlaggedFrame(
            recording_id=recording, camera_id="front", frame_index=index, image=b"x" * 10,
            image_format="jpeg", z=1.0, smoothed=1.0, threshold=0.0, model_version="v1",
            model_hash="ab" * 32,
        )  # fmt: skip

    with DurableOutbox(tmp_path / "outbox") as outbox:
        for recording, index in (("r1", 30), ("r1", 4), ("r2", 7), ("r1", 12)):
            outbox.put(flagged(recording, index))
        (corrupt,) = [f for f in outbox.frames() if f.frame_index == 12]
        outbox.mark_corrupt(corrupt.id, "test")
        assert outbox.earlier_frames("r1", "front") == [4, 30]
    earlier = from_outbox(tmp_path / "outbox")
    assert earlier.of_stream("r1", "front") == (4, 30) and earlier.of_stream("r2", "front") == (7,)
    assert earlier.of_stream("r3", "front") == () and len(earlier) == 3
    same = EarlierUploads.of([("r2", "front", 7), ("r1", "front", 30), ("r1", "front", 4)], "x")
    assert same.digest() == earlier.digest()
    with pytest.raises(ConfigError, match="not an outbox folder"):
        from_outbox(tmp_path)
