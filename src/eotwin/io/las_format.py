"""LAS 1.4 bytes written by hand: point records, VLR/EVLR records, the WKT VLR and the header.

Shared by the LAZ writer and the COPC writer, so neither imports the other.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field

import numpy as np
from pyproj import CRS

from eotwin.errors import EotwinError
from eotwin.geo.pointdata import PointBlock


@dataclass
class CloudStats:
    """Count and bounds of what was written."""

    count: int = 0
    mins: np.ndarray = field(default_factory=lambda: np.full(3, np.inf))
    maxs: np.ndarray = field(default_factory=lambda: np.full(3, -np.inf))

    def grow(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        if x.size == 0:
            return
        self.count += int(x.size)
        for axis, values in enumerate((x, y, z)):
            self.mins[axis] = min(self.mins[axis], float(values.min()))
            self.maxs[axis] = max(self.maxs[axis], float(values.max()))


def _to_int32(values: np.ndarray, name: str, scale: float) -> np.ndarray:
    if values.size and (values.min() < -(2**31) or values.max() >= 2**31):
        raise EotwinError(f"coordinate {name} out of the LAS int32 range for scale {scale}")
    return values.astype(np.int32)


def quantized(
    values: np.ndarray, axis: int, scales: np.ndarray, offsets: np.ndarray, name: str
) -> np.ndarray:
    """Coordinates as the LAS int32 of ``axis`` (the one rounding every writer and the COPC octree use)."""
    return _to_int32(np.rint((values - offsets[axis]) / scales[axis]), name, scales[axis])


def las_record(block: PointBlock, point_format, scales: np.ndarray, offsets: np.ndarray):
    """The block as LAS records (scaled int32 X, Y, Z; 16-bit RGB): pure numpy, shared by the LAS/LAZ and COPC writers."""
    import laspy

    def scaled(table: np.ndarray, axis: int, name: str) -> np.ndarray:
        return quantized(table, axis, scales, offsets, name)

    n = len(block)
    record = laspy.ScaleAwarePointRecord.zeros(n, point_format=point_format, scales=scales, offsets=offsets)
    if n == 0:
        return record
    array = record.array
    if block.is_rectilinear:  # integer tables per column and per row, gathered once through the mask
        array["X"] = block.per_column(scaled(block.column_centres(), 0, "x"))
        array["Y"] = block.per_row(scaled(block.row_centres(), 1, "y"))
    else:
        array["X"] = scaled(block.x, 0, "x")
        array["Y"] = scaled(block.y, 1, "y")
    z = block.z  # float64 metres x z scale, a fresh array
    z *= 1.0 / scales[2]
    z -= offsets[2] / scales[2]
    array["Z"] = _to_int32(np.rint(z, out=z), "z", scales[2])
    for band, name in enumerate(("red", "green", "blue")):
        channel = block.channel(band).astype(np.uint16)
        channel *= np.uint16(257)  # 8-bit to 16-bit: 255 -> 65535 exactly
        array[name] = channel
    return record


HEADER_SIZE = 375  # LAS 1.4


def vlr_record(user: str, record_id: int, data: bytes, description: str) -> bytes:
    """One LAS variable-length record: the 54-byte header, then ``data``."""
    return struct.pack("<H16sHH32s", 0, user.encode(), record_id, len(data), description.encode()) + data


def evlr_record(user: str, record_id: int, data: bytes, description: str) -> bytes:
    """One LAS 1.4 extended variable-length record: the 60-byte header, then ``data``."""
    return struct.pack("<H16sHQ32s", 0, user.encode(), record_id, len(data), description.encode()) + data


def wkt_vlr(crs: CRS) -> bytes:
    """The OGC WKT coordinate-system VLR exactly as laspy's ``add_crs`` writes it."""
    from laspy.vlrs.known import WktCoordinateSystemVlr

    return vlr_record(
        "LASF_Projection",
        2112,
        WktCoordinateSystemVlr(crs.to_wkt()).record_data_bytes(),
        "OGC WKT coordinate system",
    )


def las14_header(
    vlrs: bytes,
    n_vlrs: int,
    count: int,
    record_length: int,
    scales,
    offsets,
    mins,
    maxs,
    evlr_start: int = 0,
    n_evlrs: int = 0,
) -> bytes:
    """The 375-byte LAS 1.4 header of a LAZ-compressed point-format-7 file with the WKT bit set."""
    today = dt.date.today()
    header = struct.pack(
        "<4sHH16sBB32s32sHHHIIBHI5I3d3d6dQQIQ15Q",
        b"LASF",
        0,
        1 << 4,
        b"\0" * 16,
        1,
        4,
        b"eotwin point cloud",
        b"eotwin",
        today.timetuple().tm_yday,
        today.year,
        HEADER_SIZE,
        HEADER_SIZE + len(vlrs),
        n_vlrs,
        7 | 0x80,
        record_length,
        0,
        0,
        0,
        0,
        0,
        0,
        *scales,
        *offsets,
        maxs[0],
        mins[0],
        maxs[1],
        mins[1],
        maxs[2],
        mins[2],
        0,
        evlr_start,
        n_evlrs,
        count,
        *([0] * 15),
    )
    assert len(header) == HEADER_SIZE
    return header
