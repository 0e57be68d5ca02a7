"""Physical units to nanometres, because EM voxel sizes are compared and shown in nm."""

from __future__ import annotations

import math

# Lower-cased unit names as written by ImageJ, OME (XML and NGFF), TIFF tags and NIfTI.
_NM_PER_UNIT = {
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "nanometers": 1.0,
    "nanometres": 1.0,
    "pm": 1e-3,
    "picometer": 1e-3,
    "picometre": 1e-3,
    "a": 0.1,
    "å": 0.1,
    "\u212b": 0.1,  # ANGSTROM SIGN, distinct from the letter Å
    "angstrom": 0.1,
    "angstroms": 0.1,
    "um": 1e3,
    "µm": 1e3,  # MICRO SIGN
    "\u03bcm": 1e3,  # GREEK SMALL LETTER MU
    "\\u00b5m": 1e3,  # ImageJ writes this escape literally into its description
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "micrometers": 1e3,
    "micrometres": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
    "in": 2.54e7,
    "inch": 2.54e7,
}


def nm_per_unit(unit) -> float | None:
    """Factor from *unit* to nm, or None for pixels/unknown units (no physical size)."""
    if unit is None:
        return None
    key = str(unit).strip().lower()
    return _NM_PER_UNIT.get(key)


def to_nm(value, unit) -> float | None:
    """*value* in *unit* as nm, or None when either is missing, unknown or not positive."""
    factor = nm_per_unit(unit)
    if factor is None or value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return tidy(value * factor)


def tidy(value: float) -> float:
    """Round to 6 significant digits so 0.0046 µm shows as 4.6 nm, not 4.6000000000000005."""
    return float(f"{float(value):.6g}")
