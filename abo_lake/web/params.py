"""Reading request parameters with bounds: every value a page or plot takes goes through here.

A value that is missing, malformed or outside its bounds raises :class:`BadRequest`, which the
app turns into a 400 page naming the parameter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

__all__ = [
    "MAX_CELLS",
    "MAX_PAGE_SIZE",
    "MAX_PRESENTATIONS",
    "MAX_SWEEP_SECONDS",
    "MAX_TIME_SPAN",
    "BadRequest",
    "float_param",
    "id_list",
    "int_param",
    "text_param",
]

#: Rows of a table page at most.
MAX_PAGE_SIZE = 200
#: Cells in one dF/F plot at most.
MAX_CELLS = 8
#: Seconds of a dF/F plot at most.
MAX_TIME_SPAN = 600.0
#: Stimulus presentations in one raster/PSTH at most.
MAX_PRESENTATIONS = 400
#: Seconds of a Cell Types sweep plotted at most.
MAX_SWEEP_SECONDS = 20.0

_TEXT_RE = re.compile(r"^[\w .,:;()+\-/'@]{0,200}$")


class BadRequest(ValueError):
    """A request parameter that cannot be used (the app answers 400 with this message)."""


def int_param(query: Mapping[str, str], name: str, default: int, *, lo: int, hi: int) -> int:
    """An integer parameter within ``[lo, hi]``."""
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"parameter {name!r} must be a whole number, not {text[:40]!r}") from None
    if not lo <= value <= hi:
        raise BadRequest(f"parameter {name!r} must be between {lo} and {hi}, not {value}")
    return value


def float_param(
    query: Mapping[str, str], name: str, default: float | None, *, lo: float, hi: float
) -> float | None:
    """A finite number parameter within ``[lo, hi]`` (``default`` when absent)."""
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise BadRequest(f"parameter {name!r} must be a number, not {text[:40]!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise BadRequest(f"parameter {name!r} must be a number between {lo:g} and {hi:g}")
    return value


def id_list(query: Mapping[str, str], name: str, *, most: int) -> list[int]:
    """A comma-separated list of integer ids, at most ``most`` of them."""
    text = query.get(name, "")
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) > most:
        raise BadRequest(f"parameter {name!r} lists {len(parts)} ids; at most {most} per request")
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise BadRequest(
            f"parameter {name!r} must be comma-separated whole numbers, not {text[:60]!r}"
        ) from None


def text_param(query: Mapping[str, str], name: str, default: str = "") -> str:
    """A short plain-text parameter (names, acronyms): letters, digits and punctuation."""
    text = query.get(name, default)
    if not _TEXT_RE.match(text):
        raise BadRequest(f"parameter {name!r} has characters or a length not accepted")
    return text
