"""A model's metadata is text anyone can write: every field the pipeline uses is checked before use."""

from __future__ import annotations

import json

import pytest

from eotwin.atmocorr.ai.onnx_infer import DEFAULT_MODEL_PATH, METADATA_KEY, OnnxModel
from eotwin.errors import EotwinError


def _tampered(tmp_path, change) -> str:
    import onnx

    proto = onnx.load(str(DEFAULT_MODEL_PATH))
    entry = next(e for e in proto.metadata_props if e.key == METADATA_KEY)
    entry.value = change(json.loads(entry.value))
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    return str(path)


def _set(path: tuple, value):
    def change(meta: dict) -> str:
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return json.dumps(meta)

    return change


@pytest.mark.parametrize("change,expected", [
    (lambda meta: "{not json", "is not JSON"),
    (lambda meta: json.dumps({k: v for k, v in meta.items() if k != "config"}), "lacks bands, stride or config"),
    (_set(("stride",), 10**9), "invalid stride"),
    (_set(("config", "cell"), -3), "invalid config.cell"),
    (_set(("config", "windows"), [4, 10**6]), "invalid config.windows"),
    (_set(("config", "bright_toa"), "bright"), "invalid config.bright_toa"),
    (_set(("config", "windows"), "17"), "invalid config.windows"),
])
def test_tampered_metadata_is_a_one_line_error(tmp_path, change, expected):
    with pytest.raises(EotwinError, match=expected) as info:
        OnnxModel(_tampered(tmp_path, change))
    assert "\n" not in str(info.value)


def test_the_committed_model_passes_the_checks():
    assert OnnxModel().metadata["stride"] > 0
