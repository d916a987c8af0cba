"""Quantities with units in spec files ("1.8 TB/s", "64 GiB", "5 us"), so the files read like
a datasheet. Decimal prefixes are powers of 1000, binary ones (KiB, MiB, ...) powers of 1024,
as on datasheets: HBM bandwidth in GB/s, capacities often in GiB."""

from __future__ import annotations

import re

from coeflow.errors import ConfigError

_PREFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_NUMBER = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(.*?)\s*$")


def parse_quantity(value: object, unit: str, where: str = "") -> float:
    """Return `value` in base units of `unit` ("B", "B/s", "FLOP/s", "s", "Hz" or "" for a
    plain number). A bare number is taken as already in base units. Errors start with
    `where` (the file and field) when given."""
    at = f"{where}: " if where else ""
    if isinstance(value, bool):
        raise ConfigError(f"{at}expected a number with unit {unit!r}, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    m = _NUMBER.match(str(value))
    if not m:
        raise ConfigError(f"{at}{value!r} is not a number (with unit {unit!r})")
    number, suffix = float(m.group(1)), m.group(2)
    if suffix == "" or (unit == "" and suffix == "%"):
        return number / 100.0 if suffix == "%" else number
    if unit == "s" and suffix in _TIME:
        return number * _TIME[suffix]
    for prefix, scale in _PREFIX.items():
        if suffix == prefix + unit:
            return number * scale
    raise ConfigError(f"{at}unit of {value!r} is not {unit!r} (with an optional prefix)")
