"""Ids and keys agree: every id the door lets in makes keys the sinks accept (issue #13, D1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alscout.errors import InvalidInputError, SinkError
from alscout.storage.layout import blob_key, check_id, record_key
from alscout.storage.sinks import check_key

#: the id alphabet, weighted towards dots (the dangerous character), plus a few outsiders
_CHARS = st.sampled_from([*"....--__aZ09", "/", " ", "é", "\\", "\x00"])
_IDS = st.one_of(
    st.sampled_from([".", "..", "...", ".a", "a.", "a..b", "-", "_", "x" * 128, "x" * 129]),
    st.text(_CHARS, min_size=0, max_size=6),
    st.text(_CHARS, min_size=120, max_size=130),
)


@pytest.mark.parametrize("bad", [".", "..", "...", "a..b"])
def test_dot_ids_are_refused(bad):
    with pytest.raises(InvalidInputError, match="not allowed"):
        check_id("recording_id", bad)
    with pytest.raises(InvalidInputError, match="not allowed"):
        check_id("camera_id", bad)


@given(recording=_IDS, camera=_IDS, frame_index=st.integers(0, 10**12))
def test_every_id_check_id_accepts_makes_a_key_check_key_accepts(recording, camera, frame_index):
    try:
        check_id("recording_id", recording)
        check_id("camera_id", camera)
    except InvalidInputError:
        return
    key = record_key(recording, camera, frame_index)
    assert check_key(key) == key


@given(value=_IDS)
def test_an_id_whose_key_the_sink_refuses_is_refused_at_the_door(value):
    try:
        check_key(record_key(value, "c0", 0))
        check_key(record_key("r0", value, 0))
    except SinkError:
        with pytest.raises(InvalidInputError):
            check_id("recording_id", value)


def test_blob_keys_pass_the_sink_check():
    assert check_key(blob_key("ab" * 32 + ".jpg")) == "blobs/" + "ab" * 32 + ".jpg"


def test_a_huge_id_is_cut_short_in_the_message():
    with pytest.raises(InvalidInputError) as error:
        check_id("recording_id", "x" * 70_000)
    message = str(error.value)
    assert len(message) < 300
    assert "70000 characters" in message
