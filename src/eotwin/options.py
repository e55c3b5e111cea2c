"""Options models shared by the CLI, the demo and the DeltaTwin components: validation as one-line errors."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from eotwin.errors import EotwinError

M = TypeVar("M", bound=BaseModel)


def validation_message(exc: ValidationError, where: str | None = None) -> str:
    """The first problem of a pydantic error as one line, ``field.path: message``.

    ``where`` names the whole document when the problem has no field (a list given for a mapping);
    without it such a message is the bare text. pydantic's "Value error, " prefix is dropped.
    """
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or where
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def validated(model_class: type[M], /, **kwargs: object) -> M:
    """Build ``model_class`` from plain values; the first validation error becomes a one-line :class:`EotwinError`.

    Positional-only, so that an options field may itself be called ``model`` (atmocorr's AI model path).
    """
    try:
        return model_class(**kwargs)
    except ValidationError as exc:
        raise EotwinError(validation_message(exc, "options")) from None
