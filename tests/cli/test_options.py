"""One line per pydantic validation error (eotwin.options), the same for CLI options, configs and manifests."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from eotwin.errors import EotwinError
from eotwin.options import validated, validation_message
from eotwin.sample.options import SampleOptions


class _Inner(BaseModel):
    depth: int


class _Model(BaseModel):
    fraction: float = 1.0
    inner: _Inner | None = None

    @field_validator("fraction")
    @classmethod
    def _in_range(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {value}")
        return value


def _error(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        _Model.model_validate(data)
    return info.value


def test_message_names_the_field_path_without_pydantic_prefix():
    assert validation_message(_error({"fraction": 2})) == "fraction: fraction must be in (0, 1], got 2.0"
    assert validation_message(_error({"inner": {"depth": "deep"}}), "config").startswith("inner.depth: Input should")


def test_an_error_without_a_field_names_the_document_when_told():
    assert validation_message(_error([1]), "options").startswith("options: Input should be a valid dictionary")
    assert validation_message(_error([1])).startswith("Input should be a valid dictionary")


def test_validated_raises_one_line_eotwin_errors():
    with pytest.raises(EotwinError, match=r"^size: Input should be greater than or equal to 64$"):
        validated(SampleOptions, size=10)
    assert validated(SampleOptions, seed=7).seed == 7
