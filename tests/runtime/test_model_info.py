from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from alscout.errors import InvalidInputError, ModelError
from alscout.runtime.model_info import (
    METADATA_KEYS,
    SCORING_KEYS,
    GraphScoring,
    ModelInfo,
    Normalisation,
    file_sha256,
)


def make_info(**changes) -> ModelInfo:
    values = dict(
        name="det",
        version="3",
        num_heads=2,
        default_boxes=((100, 40), (50, 20)),
        input_size=(48, 64),
        normalisation=Normalisation(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)),
        training_data_digest="sha256:abc",
    )
    values.update(changes)
    return ModelInfo(**values)


def test_metadata_round_trip_keeps_every_field():
    info = make_info()
    metadata = info.to_metadata()
    assert set(metadata) == set(METADATA_KEYS)
    assert all(isinstance(v, str) for v in metadata.values())
    back = ModelInfo.from_metadata(metadata, source="m.onnx", sha256="f" * 64)
    assert back.with_file("", "onnx") == info.with_file("", "onnx")
    assert back.sha256 == back.source_sha256 == "f" * 64
    assert json.loads(metadata["alscout.input_size"]) == {"height": 48, "width": 64}


@pytest.mark.parametrize("key", METADATA_KEYS)
def test_missing_key_is_a_model_error_naming_it(key):
    metadata = make_info().to_metadata()
    del metadata[key]
    with pytest.raises(ModelError, match=key.replace(".", r"\.")) as caught:
        ModelInfo.from_metadata(metadata, source="model.onnx")
    assert "model.onnx" in str(caught.value)


def test_unknown_contract_version_is_refused():
    metadata = make_info().to_metadata()
    metadata["alscout.contract"] = "99"
    with pytest.raises(ModelError, match="contract '99'"):
        ModelInfo.from_metadata(metadata, source="m.onnx")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("alscout.num_heads", "two"),
        ("alscout.default_boxes", "[[1, 2], [3]]"),
        ("alscout.input_size", "[64, 48]"),
        ("alscout.normalisation", "{not json"),
    ],
)
def test_malformed_values_name_the_key(key, value):
    metadata = make_info().to_metadata()
    metadata[key] = value
    with pytest.raises(ModelError, match=key.replace(".", r"\.")):
        ModelInfo.from_metadata(metadata, source="m.onnx")


def test_heads_and_default_boxes_must_agree():
    metadata = make_info().to_metadata()
    metadata["alscout.num_heads"] = "3"
    with pytest.raises(ModelError, match="K=3 heads but 2 default boxes"):
        ModelInfo.from_metadata(metadata, source="m.onnx")


def test_empty_digest_and_bad_normalisation_are_refused():
    with pytest.raises(ModelError, match="training_data_digest"):
        make_info(training_data_digest="")
    with pytest.raises(ModelError, match="std"):
        Normalisation(std=(0.2, 0.0, 0.3))
    with pytest.raises(ModelError, match="RGB"):
        Normalisation.from_json(
            json.dumps({"color": "BGR", "scale": 1, "mean": [0] * 3, "std": [1] * 3})
        )


def test_normalisation_matches_the_formula_and_layout():
    norm = Normalisation(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    out = norm.apply(frames)
    assert out.shape == (2, 3, 5, 7)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    for c in range(3):
        expected = (frames[..., c] / 255.0 - norm.mean[c]) / norm.std[c]
        np.testing.assert_allclose(out[:, c], expected, atol=1e-5)
    np.testing.assert_allclose(norm.apply(frames[0]), out[0], atol=0)
    with pytest.raises(InvalidInputError):
        norm.apply(frames[..., :2])


def test_file_sha256_matches_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3 << 20)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


# -- scores inside the graph (alscout.scores.* keys) -------------------------------------


def test_graph_scoring_round_trips_and_plain_models_have_none():
    scoring = GraphScoring(radius=5, region=12, method="entropy", double_evaluation=False)
    info = make_info(scoring=scoring)
    metadata = info.to_metadata()
    assert set(metadata) == set(METADATA_KEYS) | set(SCORING_KEYS)
    back = ModelInfo.from_metadata(metadata, source="m.onnx")
    assert back.scoring == scoring
    assert ModelInfo.from_metadata(make_info().to_metadata(), source="m.onnx").scoring is None
    assert info.with_file("a" * 64, "tensorrt").scoring == scoring


@pytest.mark.parametrize("key", SCORING_KEYS)
def test_a_partial_set_of_scoring_keys_is_refused_naming_the_missing_one(key):
    metadata = make_info(scoring=GraphScoring()).to_metadata()
    del metadata[key]
    with pytest.raises(ModelError, match=f"m.onnx: .*lacks {key}"):
        ModelInfo.from_metadata(metadata, source="m.onnx")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("alscout.scores.radius", "nine", "alscout.scores.radius is malformed"),
        ("alscout.scores.double_evaluation", "yes", "double_evaluation is malformed"),
        ("alscout.scores.method", "variance", "method must be one of"),
        ("alscout.scores.region", "0", "region must be an integer >= 1"),
        ("alscout.scores.aggregation", "median", "aggregation must be one of"),
    ],
)
def test_malformed_scoring_values_are_named(key, value, message):
    metadata = make_info(scoring=GraphScoring()).to_metadata() | {key: value}
    with pytest.raises(ModelError, match=message) as caught:
        ModelInfo.from_metadata(metadata, source="m.onnx")
    assert str(caught.value).startswith("m.onnx: ")
    assert str(caught.value).count("m.onnx") == 1


def test_scoring_names_are_those_of_the_numba_path():
    from alscout.runtime.scoring import AGGREGATIONS, METHODS

    for method in METHODS:
        GraphScoring(method=method)
    for how in AGGREGATIONS:
        GraphScoring(aggregation=how)
    with pytest.raises(ModelError):
        GraphScoring(method="mc-dropout")


def test_disagreements_name_the_settings_that_matter():
    model = GraphScoring(radius=5)
    assert model.disagreements(GraphScoring()) == ["radius: 5 vs 9"]
    assert GraphScoring().disagreements(GraphScoring()) == []
    both_entropy = GraphScoring(method="entropy", radius=3)
    assert both_entropy.disagreements(GraphScoring(method="entropy")) == []  # no window
    assert both_entropy.disagreements(GraphScoring()) == [
        "radius: 3 vs 9",
        "method: entropy vs divergence",
    ]
    means = GraphScoring(aggregation="mean", region=5)
    assert means.disagreements(GraphScoring(aggregation="mean")) == []  # no regions
    assert GraphScoring(double_evaluation=False, heatmap_stride=8).disagreements(
        GraphScoring()
    ) == ["double_evaluation: False vs True", "heatmap_stride: 8 vs 16"]


def test_the_difficulty_flag_is_an_optional_key():
    """A model without the difficulty head carries exactly the keys it carried before the
    head existed; one with it says so, and a malformed value is refused."""
    plain = make_info()
    assert not plain.difficulty and "alscout.difficulty" not in plain.to_metadata()
    head = make_info(difficulty=True)
    metadata = head.to_metadata()
    assert metadata["alscout.difficulty"] == "true"
    assert ModelInfo.from_metadata(metadata, source="m.onnx").difficulty
    assert not ModelInfo.from_metadata(
        {**metadata, "alscout.difficulty": "false"}, source="m"
    ).difficulty
    with pytest.raises(ModelError, match=r"alscout\.difficulty is malformed"):
        ModelInfo.from_metadata({**metadata, "alscout.difficulty": "yes"}, source="m.onnx")
    scoring = GraphScoring(
        radius=4,
        region=20,
        method="divergence",
        aggregation="maxpool",
        double_evaluation=True,
        heatmap_stride=16,
    )
    with pytest.raises(ModelError, match="no difficulty output"):
        make_info(difficulty=True, scoring=scoring)


def test_head_strides_are_optional_and_round_trip():
    info = make_info(head_strides=(16, 8))
    metadata = info.to_metadata()
    assert json.loads(metadata["alscout.head_strides"]) == [16, 8]
    back = ModelInfo.from_metadata(metadata, source="m.onnx")
    assert back.head_strides == (16, 8)
    assert ModelInfo.from_metadata(make_info().to_metadata(), source="m.onnx").head_strides is None
    for bad in ((16,), (16, 0), (16, 8.5)):
        with pytest.raises(ModelError, match="head_strides"):
            make_info(head_strides=bad)
    metadata["alscout.head_strides"] = "[16, 0]"
    with pytest.raises(ModelError, match=r"m\.onnx.*head_strides"):
        ModelInfo.from_metadata(metadata, source="m.onnx")
