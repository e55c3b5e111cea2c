"""Options models shared by the CLI, the demo and the DeltaTwin components: validation as one-line errors."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from eotwin.errors import EotwinError

M = TypeVar("M", bound=BaseModel)


def validated(model_class: type[M], /, **kwargs: object) -> M:
    """Build ``model_class`` from plain values; the first validation error becomes a one-line :class:`EotwinError`.

    Positional-only, so that an options field may itself be called ``model`` (atmocorr's AI model path).
    """
    try:
        return model_class(**kwargs)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "options"
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        raise EotwinError(f"{where}: {message}") from None
