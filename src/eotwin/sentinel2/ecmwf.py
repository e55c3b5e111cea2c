"""The total ozone column from a Sentinel-2 L1C's ECMWF auxiliary data (AUX_ECMWFT, a GRIB file).

Every L1C SAFE carries ECMWF forecast fields for its tile in ``GRANULE/<granule>/AUX_DATA/AUX_ECMWFT``,
a GRIB file without extension: total column water vapour (``tcwv``), mean sea-level pressure (``msl``)
and total column ozone (``tco3``, paramId 206, kg m-2), plus wind and humidity from processing baseline
04.00. sen2cor takes its ozone from there by default, so eotwin does the same when the file is present.

Units: ECMWF gives ozone as a mass column in kg m-2; 6S and eotwin's tables take the column in cm-atm
(the thickness of the pure ozone layer at standard temperature and pressure). One Dobson unit is
2.1415e-5 kg m-2 and 0.001 cm-atm, hence ``cm-atm = kg m-2 / 2.1415e-5 / 1000`` (e.g. 0.00642 kg m-2
is 299.8 DU, 0.2998 cm-atm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from eotwin.errors import EotwinError

TCO3_PARAM_ID = 206  # ECMWF "total column ozone", kg m-2
KG_M2_PER_DU = 2.1415e-5  # one Dobson unit as a mass column of ozone
CM_ATM_PER_DU = 1e-3
# accepted total columns: measured ones lie within about 90-650 DU, and the Antarctic ozone hole goes
# below 100 DU, so a value outside this range is a unit or decoding error, not weather
OZONE_RANGE_DU = (50.0, 700.0)
OZONE_RANGE_CM_ATM = (0.05, 0.7)  # the same in cm-atm


def kg_m2_to_cm_atm(column: float) -> float:
    """An ozone mass column (kg m-2) as a layer thickness (cm-atm)."""
    return column / KG_M2_PER_DU * CM_ATM_PER_DU


def _eccodes() -> Any:  # the eccodes module (imported late: an optional dependency)
    try:
        import eccodes
    except (ImportError, RuntimeError, OSError) as exc:  # RuntimeError: package there, ecCodes library not
        raise EotwinError(
            f"reading ECMWF GRIB data needs eccodes ({exc}); install it with: pip install 'eotwin[atmocorr]'"
        ) from None
    return eccodes


def _message_length(data: memoryview, pos: int) -> int | None:
    """The length a GRIB message starting at ``pos`` declares (None: unknown, let ecCodes find out)."""
    if len(data) - pos < 16:
        return None
    edition = data[pos + 7]
    if edition == 2:
        return int.from_bytes(data[pos + 8 : pos + 16], "big")
    if edition == 1:
        length = int.from_bytes(data[pos + 4 : pos + 7], "big")
        return None if length & 0x800000 else length  # ECMWF's large-message encoding: ecCodes decodes it
    return None


MAX_GRIB_POINTS = 4_000_000  # a global 0.125 deg grid is 2.9 M points; AUX_ECMWFT covers one tile with a few dozen


def grib_fields(data: bytes, name: str, param_ids: tuple[int, ...]) -> dict[int, list[np.ndarray]]:
    """The valid values of every message of the ``param_ids`` in a GRIB byte stream (decoded in memory)."""
    ec = _eccodes()
    view = memoryview(data)
    pos = data.find(b"GRIB")
    if pos != 0:
        raise EotwinError(f"{name}: not a GRIB file (it does not start with 'GRIB')")
    found: dict[int, list[np.ndarray]] = {}
    count = 0
    while pos >= 0:
        if len(data) - pos < 8 or data[pos + 7] not in (1, 2):  # ecCodes would print its own errors on stderr
            raise EotwinError(f"{name}: GRIB message {count + 1} is corrupt (no GRIB edition 1 or 2 header)")
        declared = _message_length(view, pos)
        if declared is not None and (
            declared < 16
            or pos + declared > len(data)
            or data[pos + declared - 4 : pos + declared] != b"7777"
        ):  # too short, cut off, or not ending in the end-of-message mark
            raise EotwinError(f"{name}: GRIB message {count + 1} is truncated or corrupt")
        chunk = view[pos : pos + declared] if declared is not None else view[pos:]
        handle = None
        try:
            handle = ec.codes_new_from_message(chunk)
            length = int(ec.codes_get(handle, "totalLength"))
            if declared is not None and length != declared:  # ecCodes guessed past a damaged header
                raise EotwinError(f"{name}: GRIB message {count + 1} is corrupt (inconsistent length)")
            param = int(ec.codes_get(handle, "paramId"))
            if param in param_ids:
                points = int(ec.codes_get(handle, "numberOfValues"))
                if not 0 < points <= MAX_GRIB_POINTS:  # a header may declare any size; decoding would allocate it
                    raise EotwinError(f"{name}: GRIB message {count + 1} declares {points:,} values "
                                      f"(an auxiliary field has at most {MAX_GRIB_POINTS:,})")
                values = np.asarray(ec.codes_get_values(handle), dtype=np.float64)
                if int(ec.codes_get(handle, "bitmapPresent")):
                    values = values[values != float(ec.codes_get(handle, "missingValue"))]
                found.setdefault(param, []).append(values[np.isfinite(values)])
        except ec.GribInternalError as exc:
            raise EotwinError(f"{name}: GRIB message {count + 1} is corrupt ({exc})") from None
        finally:
            if handle is not None:
                ec.codes_release(handle)
        count += 1
        pos = data.find(b"GRIB", pos + max(length, 4))
    return found


def read_grib_source(source: bytes | Path, name: str | None = None) -> tuple[bytes, str]:
    """The bytes of a GRIB file given as bytes or a path, and the name errors give it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "GRIB data"
    path = Path(source)
    try:
        return path.read_bytes(), name or str(path)
    except OSError as exc:
        raise EotwinError(f"{name or path}: cannot read ({exc.strerror or exc})") from None


def read_total_ozone(source: bytes | Path, name: str | None = None) -> float:
    """Total ozone column (cm-atm) from an ECMWF GRIB file (``AUX_ECMWFT``), as bytes or a path.

    The mean of the ``tco3`` field over its grid points, over all ``tco3`` messages (forecast steps)
    when there are several: the L1C's tile spans about 1 degree, where ozone varies by a few DU.
    ``name`` names the source in errors (default: the path, or "GRIB data").
    """
    data, name = read_grib_source(source, name)
    found = grib_fields(data, name, (TCO3_PARAM_ID,)).get(TCO3_PARAM_ID, [])
    if not found:
        raise EotwinError(f"{name}: no total column ozone (tco3, paramId {TCO3_PARAM_ID}) in the GRIB data")
    values = np.concatenate(found)
    if values.size == 0:
        raise EotwinError(f"{name}: the total column ozone field holds only missing values")
    du = float(values.mean()) / KG_M2_PER_DU
    lo, hi = OZONE_RANGE_DU
    if not lo <= du <= hi:
        raise EotwinError(
            f"{name}: total column ozone {du:.1f} DU is outside the physical range [{lo:.0f}, {hi:.0f}] DU"
        )
    return du * CM_ATM_PER_DU
