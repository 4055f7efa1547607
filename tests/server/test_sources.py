"""Frame sources of ``alscout stream``: image folders, video files, MCAP, cameras."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from mcap_ros2.writer import Writer as McapWriter

from alscout.errors import DataError, InvalidInputError
from alscout.files import frame_files
from alscout.runtime.decode import decode_frame
from alscout.server.sources import (
    CameraSource,
    ImageFolderSource,
    McapSource,
    SourceFrame,
    VideoFileSource,
    natural_key,
    open_source,
    paced,
)

HEADER_DEFS = """
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""
IMAGE_DEF = (
    "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
    "uint8 is_bigendian\nuint32 step\nuint8[] data\n" + HEADER_DEFS
)
COMPRESSED_DEF = "std_msgs/Header header\nstring format\nuint8[] data\n" + HEADER_DEFS
STRING_DEF = "string data\n"


def rgb_image(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def header(stamp_ns: int, frame_id: str = "cam_front") -> dict:
    return {
        "stamp": {"sec": stamp_ns // 1_000_000_000, "nanosec": stamp_ns % 1_000_000_000},
        "frame_id": frame_id,
    }


def write_mcap(path: Path, messages) -> Path:
    """``messages``: (topic, "image" | "compressed" | "string", dict, log_time_ns)."""
    with path.open("wb") as stream:
        writer = McapWriter(stream)
        schemas = {
            "image": writer.register_msgdef("sensor_msgs/msg/Image", IMAGE_DEF),
            "compressed": writer.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_DEF),
            "string": writer.register_msgdef("std_msgs/msg/String", STRING_DEF),
        }
        for topic, kind, message, log_time in messages:
            writer.write_message(topic, schemas[kind], message, log_time=log_time)
        writer.finish()
    return path


def raw_message(pixels: np.ndarray, encoding: str, stamp_ns: int, pad: int = 0) -> dict:
    height, width, channels = pixels.shape
    rows = np.zeros((height, width * channels + pad), dtype=np.uint8)
    rows[:, : width * channels] = pixels.reshape(height, -1)
    return {
        "header": header(stamp_ns),
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * channels + pad,
        "data": rows.tobytes(),
    }


def decoded(frame: SourceFrame) -> np.ndarray:
    """The RGB pixels the server will see for ``frame``."""
    return decode_frame(
        frame.image,
        encoding=frame.encoding,
        width=frame.width,
        height=frame.height,
        pixel_format=frame.pixel_format or "rgb8",
    )


# ---------------------------------------------------------------- image folders


def test_natural_order():
    names = ["f10.png", "f2.png", "F1.png", "f2b.png", "a.png"]
    assert sorted(names, key=natural_key) == ["a.png", "F1.png", "f2.png", "f2b.png", "f10.png"]


def test_image_folder_sends_files_as_stored_in_natural_order(tmp_path):
    images = {
        name: rgb_image(i) for i, name in enumerate(["frame10.png", "frame2.jpg", "frame1.png"])
    }
    for name, pixels in images.items():
        cv2.imwrite(str(tmp_path / name), pixels[:, :, ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(tmp_path)
    assert isinstance(source, ImageFolderSource) and source.total == 3
    frames = list(source)
    assert [f.frame_index for f in frames] == [0, 1, 2]
    assert [f.metadata["file"] for f in frames] == ["frame1.png", "frame2.jpg", "frame10.png"]
    assert [f.encoding for f in frames] == ["png", "jpeg", "png"]
    assert frames[0].image == (tmp_path / "frame1.png").read_bytes()
    np.testing.assert_array_equal(decoded(frames[2]), images["frame10.png"])


def test_image_folder_streams_every_frame_file_in_frame_order(tmp_path):
    """The stream numbers a folder's frames as training and evaluation do
    (:func:`alscout.files.frame_files`): a BMP is sent as raw pixels at its index."""
    images = {name: rgb_image(i) for i, name in enumerate(["f10.png", "f2.bmp", "f1.jpg"])}
    for name, pixels in images.items():
        cv2.imwrite(str(tmp_path / name), pixels[:, :, ::-1])
    (tmp_path / "._f1.jpg").write_bytes(b"macOS metadata")
    frames = list(ImageFolderSource(tmp_path))
    assert [f.metadata["file"] for f in frames] == [p.name for p in frame_files(tmp_path)]
    assert [f.metadata["file"] for f in frames] == ["f1.jpg", "f2.bmp", "f10.png"]
    assert (frames[1].encoding, frames[1].pixel_format) == ("raw", "bgr8")
    np.testing.assert_array_equal(decoded(frames[1]), images["f2.bmp"])


def test_image_folder_errors_name_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no images \(\.jpg, \.jpeg, \.png, \.bmp\)"):
        ImageFolderSource(tmp_path / "empty")
    with pytest.raises(DataError, match="nowhere: no such folder"):
        ImageFolderSource(tmp_path / "nowhere")


# ---------------------------------------------------------------- video files


def write_video(path: Path, n: int, fps: float = 10.0) -> list[np.ndarray]:
    frames = [np.full((48, 64, 3), 20 * i, dtype=np.uint8) for i in range(n)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return frames


def test_video_file_frames_are_numbered_timed_and_lossless(tmp_path):
    video = tmp_path / "drive.avi"
    written = write_video(video, 6)
    start = 1_700_000_000_000_000_000
    source = open_source(video, start_time_ns=start)
    assert isinstance(source, VideoFileSource) and source.total == 6
    frames = list(source)
    source.close()
    assert [f.frame_index for f in frames] == list(range(6))
    assert {(f.encoding, f.width, f.height, f.pixel_format) for f in frames} == {
        ("raw", 64, 48, "bgr8")
    }
    assert [f.capture_time_ns for f in frames] == [start + i * 100_000_000 for i in range(6)]
    assert frames[3].metadata["video_time_ms"] == "300.000"
    for frame, pixels in zip(frames, written, strict=True):  # MJPEG of flat grey: near exact
        assert np.abs(decoded(frame)[:, :, ::-1].astype(int) - pixels).max() <= 3
    without_start = next(iter(VideoFileSource(video)))
    assert without_start.capture_time_ns == 0


def test_video_frames_can_travel_as_jpeg_or_png(tmp_path):
    video = tmp_path / "drive.avi"
    write_video(video, 2)
    raw = next(iter(VideoFileSource(video)))
    for encoding in ("png", "jpeg"):
        frame = next(iter(VideoFileSource(video, frame_encoding=encoding, jpeg_quality=100)))
        assert frame.encoding == encoding and frame.width == 0
        assert np.abs(decoded(frame).astype(int) - decoded(raw)).max() <= 2
    with pytest.raises(InvalidInputError, match="frame_encoding"):
        VideoFileSource(video, frame_encoding="webp")


def test_bad_video_files_are_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing\.avi: no such file or folder"):
        open_source(tmp_path / "missing.avi")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(DataError, match=r"junk\.mp4"):
        list(open_source(junk))


def test_pets09_video_reads_as_795_frames(pets_video):
    with VideoFileSource(pets_video) as source:
        assert source.total == 795
        first = list(itertools.islice(source, 3))
    assert [(f.width, f.height) for f in first] == [(480, 360)] * 3
    assert len(first[0].image) == 480 * 360 * 3


# ---------------------------------------------------------------- cameras / streams


def test_camera_source_stamps_frames_with_the_clock_and_stops_at_max_frames(tmp_path):
    video = tmp_path / "cam.avi"
    write_video(video, 5)
    before = time.time_ns()
    with CameraSource(str(video), max_frames=3) as camera:  # OpenCV opens files like streams
        frames = list(camera)
    assert [f.frame_index for f in frames] == [0, 1, 2]
    stamps = [f.capture_time_ns for f in frames]
    assert before <= stamps[0] <= stamps[1] <= stamps[2] <= time.time_ns()
    with CameraSource(str(video)) as camera:  # no limit: until the stream ends
        assert len(list(camera)) == 5


def test_unreachable_stream_is_a_data_error():
    with pytest.raises(DataError, match=r"camera 'file:///nonexistent/alscout.avi'"):
        open_source("file:///nonexistent/alscout.avi")


# ---------------------------------------------------------------- MCAP


def test_mcap_raw_images_with_row_padding_and_alpha(tmp_path):
    pixels = [rgb_image(i) for i in range(3)]
    bgra = np.concatenate([pixels[2][:, :, ::-1], np.full((24, 32, 1), 255, np.uint8)], axis=2)
    stamps = [1_600_000_000_000_000_000 + i * 33_000_000 for i in range(3)]
    path = write_mcap(
        tmp_path / "drive.mcap",
        [
            ("/cam/front", "image", raw_message(pixels[0], "rgb8", stamps[0], pad=5), 10),
            ("/chatter", "string", {"data": "hello"}, 11),
            ("/cam/front", "image", raw_message(pixels[1][:, :, ::-1], "bgr8", stamps[1]), 12),
            ("/cam/front", "image", raw_message(bgra, "bgra8", 0), 13),
        ],
    )
    source = open_source(path)
    assert isinstance(source, McapSource)
    assert source.topic == "/cam/front" and source.total == 3
    frames = list(source)
    assert [f.frame_index for f in frames] == [0, 1, 2]
    assert [f.pixel_format for f in frames] == ["rgb8", "bgr8", "bgr8"]
    assert [f.capture_time_ns for f in frames] == [stamps[0], stamps[1], 13]  # zero stamp: log time
    assert frames[0].metadata == {"topic": "/cam/front", "frame_id": "cam_front"}
    for frame, expected in zip(frames, pixels, strict=True):
        np.testing.assert_array_equal(decoded(frame), expected)


def test_mcap_compressed_images_pass_through_and_topics_are_chosen(tmp_path):
    jpeg = cv2.imencode(".jpg", rgb_image(5))[1].tobytes()
    png = cv2.imencode(".png", rgb_image(6))[1].tobytes()
    path = write_mcap(
        tmp_path / "two.mcap",
        [
            (
                "/b/compressed",
                "compressed",
                {"header": header(5), "format": "jpeg", "data": jpeg},
                1,
            ),
            ("/a/raw", "image", raw_message(rgb_image(7), "rgb8", 6), 2),
            ("/b/compressed", "compressed", {"header": header(7), "format": "png", "data": png}, 3),
        ],
    )
    assert McapSource(path).topic == "/a/raw"  # first image topic by name
    frames = list(McapSource(path, topic="/b/compressed"))
    assert [(f.encoding, f.image, f.capture_time_ns) for f in frames] == [
        ("jpeg", jpeg, 5),
        ("png", png, 7),
    ]
    with pytest.raises(DataError, match=r"topic '/nope' is not an image topic.*'/a/raw'"):
        McapSource(path, topic="/nope")


def test_mcap_errors_name_the_file_and_the_problem(tmp_path):
    only_text = write_mcap(tmp_path / "text.mcap", [("/chatter", "string", {"data": "x"}, 1)])
    with pytest.raises(DataError, match=r"text\.mcap: no topic of type sensor_msgs/msg/Image"):
        McapSource(only_text)
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n garbage")
    with pytest.raises(DataError, match=r"junk\.mcap: not a readable MCAP file"):
        McapSource(junk)
    with pytest.raises(DataError, match=r"gone\.mcap: no such MCAP file"):
        open_source(tmp_path / "gone.mcap")
    odd = write_mcap(
        tmp_path / "odd.mcap",
        [
            ("/cam", "image", raw_message(rgb_image(1), "rgb8", 1), 1),
            ("/cam", "image", {**raw_message(rgb_image(1), "rgb8", 2), "encoding": "yuv422"}, 2),
        ],
    )
    frames = iter(McapSource(odd))
    next(frames)
    with pytest.raises(DataError, match=r"odd\.mcap:/cam: message 1: image encoding 'yuv422'"):
        next(frames)
    short = write_mcap(
        tmp_path / "short.mcap",
        [("/cam", "image", {**raw_message(rgb_image(1), "rgb8", 1), "height": 99}, 1)],
    )
    with pytest.raises(DataError, match="does not fit its"):
        list(McapSource(short))
    tiff = write_mcap(
        tmp_path / "tiff.mcap",
        [("/c", "compressed", {"header": header(1), "format": "tiff", "data": b"II*"}, 1)],
    )
    with pytest.raises(DataError, match="neither JPEG nor PNG"):
        list(McapSource(tiff))


# ---------------------------------------------------------------- pacing


def test_paced_limits_the_rate_without_bursts(monkeypatch):
    """On a fake clock, so a busy machine cannot make the test flaky."""
    clock = [100.0]
    monkeypatch.setattr("alscout.server.sources.time.monotonic", lambda: clock[0])
    monkeypatch.setattr(
        "alscout.server.sources.time.sleep", lambda s: clock.__setitem__(0, clock[0] + s)
    )
    frames = [SourceFrame(i, b"x", "jpeg") for i in range(6)]
    period = 1 / 50.0
    released = []
    for frame in paced(frames, fps=50.0):
        released.append(clock[0])
        if frame.frame_index == 2:
            clock[0] += 0.1  # the consumer stalls for five periods
    # never faster than 50 fps
    for k in range(1, 3):
        assert released[k] - released[0] == pytest.approx(k * period)
    # after the stall, frame 3 goes at once but frame 4 waits a full period: no burst
    assert released[3] - released[2] == pytest.approx(0.1)
    assert released[4] - released[3] == pytest.approx(period)
    assert released[5] - released[4] == pytest.approx(period)
    assert list(paced(frames, None)) == frames and list(paced(frames, 0)) == frames
    with pytest.raises(InvalidInputError, match="fps must be >= 0"):
        list(paced(frames, -1))
