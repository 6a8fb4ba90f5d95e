"""Column-name sanitizing, shared by ingestion and serving so both see the same names."""

import re
from collections.abc import Iterable

from components.common.errors import InputDataError

_INVALID = re.compile(r"[^0-9a-zA-Z_]+")


def sanitize_column_name(name: object) -> str:
    """``"math score"`` -> ``"math_score"``; ``"Body Mass (g)"`` -> ``"body_mass_g"``.

    Lower-cases, replaces every run of characters outside ``[0-9a-zA-Z_]`` with one ``_``, strips
    leading/trailing ``_`` and prefixes ``c_`` when the result would start with a digit.
    """
    text = _INVALID.sub("_", str(name).strip()).strip("_").lower()
    if not text:
        raise InputDataError(f"column name {name!r} has no letters or digits; rename it in the source table")
    if text[0].isdigit():
        text = f"c_{text}"
    return text


def sanitize_column_names(names: Iterable[object]) -> dict[str, str]:
    """Map each original name to its sanitized name; two names that collide are an error."""
    mapping: dict[str, str] = {}
    seen: dict[str, object] = {}
    for name in names:
        clean = sanitize_column_name(name)
        if clean in seen:
            raise InputDataError(
                f"columns {seen[clean]!r} and {name!r} both become {clean!r} after sanitizing; "
                "rename one of them in the source table"
            )
        seen[clean] = name
        mapping[str(name)] = clean
    return mapping
