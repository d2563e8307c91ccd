"""How numbers, sizes, times and durations are written in a report."""

from __future__ import annotations

import math
from datetime import datetime

MISSING = "—"


def is_number(value: object) -> bool:
    """True for a finite int or float (bools and NaN are not report numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value)


def percent(value: object, digits: int = 1) -> str:
    """A 0..1 ratio as a percentage: ``0.9166`` -> ``91.7%``."""
    return f"{value * 100:.{digits}f}%" if is_number(value) else MISSING


def decimal(value: object, digits: int = 3) -> str:
    """A plain number with fixed decimals: ``0.91663`` -> ``0.917``."""
    return f"{value:.{digits}f}" if is_number(value) else MISSING


def integer(value: object) -> str:
    """An integer with thousands separators: ``12345`` -> ``12,345``."""
    return f"{int(value):,}" if is_number(value) else MISSING


def byte_size(value: object) -> str:
    """Bytes in binary units: ``1536`` -> ``1.5 KiB``."""
    if not is_number(value):
        return MISSING
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return MISSING


def duration(seconds: object) -> str:
    """Seconds as ``850 ms``, ``12.3 s``, ``4 min 05 s`` or ``1 h 02 min``."""
    if not is_number(seconds):
        return MISSING
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def timestamp(value: datetime | str | None) -> str:
    """A date and time to the minute, with its zone when known."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    zone = value.strftime(" %Z") if value.tzinfo else ""
    return value.strftime("%Y-%m-%d %H:%M") + zone


def setting(value: object) -> str:
    """A configuration value as a reader expects it (``None`` -> ``—``, bools -> yes/no)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or MISSING
    return str(value)
