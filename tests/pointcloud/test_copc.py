"""COPC output: read back by laspy's COPC reader, compared point for point with the LAZ of the same run,
and the header, info VLR and hierarchy checked byte by byte against the COPC 1.0 specification."""

from __future__ import annotations

import itertools
import json
import struct

import laspy
import lazrs
import numpy as np
import pytest
from laspy.copc import Bounds

from eotwin.cli.main import run
from eotwin.io import copc_writer
from eotwin.io.copc_octree import plan_cube, plan_layout, trailing_zeros, with_ancestors
from eotwin.pointcloud.pipeline import build_point_cloud, make_options


def point_set(points) -> np.ndarray:
    """The points as a sorted table of (X, Y, Z, R, G, B) integers: equal tables, equal point sets."""
    table = np.rec.fromarrays([np.asarray(points.X), np.asarray(points.Y), np.asarray(points.Z), np.asarray(points.red),
                               np.asarray(points.green), np.asarray(points.blue)])
    return np.sort(table)


def build_pair(sample_files, root, monkeypatch, node_side: int, z_scale: float = 1.0, fraction: float = 1.0):
    """The same run written as LAZ and as COPC (nodes of at most ``node_side**2`` points per level)."""
    monkeypatch.setattr(copc_writer, "NODE_SIDE", node_side)
    common = dict(dem=str(sample_files.dem), image=(str(sample_files.tci),), mask=str(sample_files.scl), z_scale=z_scale,
                  sampled_fraction=fraction, viewer=False, preview=False, block_rows=37)
    laz = build_point_cloud(make_options(output=root / "c.laz", **common))
    copc = build_point_cloud(make_options(output=root / "c.copc.laz", **common))
    return laz, copc


@pytest.fixture(scope="module")
def deep_pair(sample_files, tmp_path_factory):
    """A tree 5 levels deep with 4 spill buckets from the 200 x 200 sample (nodes of 16 x 16 lattice points)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        return build_pair(sample_files, tmp_path_factory.mktemp("copc"), monkeypatch, node_side=16)


def test_copc_holds_exactly_the_points_of_the_laz(deep_pair):
    laz, copc = deep_pair
    assert copc.count == laz.count > 30_000
    reference = point_set(laspy.read(laz.output).points)
    with laspy.CopcReader.open(copc.output) as reader:
        assert reader.header.point_count == laz.count
        assert np.array_equal(point_set(reader.query()), reference)
    assert np.array_equal(point_set(laspy.read(copc.output).points), reference), "plain LAZ readers see the same points"


def test_root_level_is_a_subset_spread_over_the_whole_extent(deep_pair):
    laz, copc = deep_pair
    every = laspy.read(laz.output)
    with laspy.CopcReader.open(copc.output) as reader:
        root = reader.query(level=0)
        deeper = reader.query(level=range(1, 64))
    assert 0 < len(root) < len(every) / 50
    assert len(root) + len(deeper) == len(every)
    # every cell of a 4 x 4 grid over the extent that has points has root points too
    x0, y0 = every.header.mins[:2]
    size = (every.header.maxs[:2] - every.header.mins[:2]) / 4

    def cells(points) -> set[tuple[int, int]]:
        ix = np.minimum(((np.asarray(points.x) - x0) / size[0]).astype(int), 3)
        iy = np.minimum(((np.asarray(points.y) - y0) / size[1]).astype(int), 3)
        return set(zip(ix.tolist(), iy.tolist(), strict=True))

    assert cells(root) == cells(every) and len(cells(every)) >= 14


@pytest.mark.parametrize("fractions", [(0.1, 0.2, 0.35, 0.6), (0.5, 0.0, 1.0, 0.5), (0.0, 0.0, 1.0, 1.0),
                                       (0.33, 0.41, 0.34, 0.42)])
def test_bounds_query_returns_exactly_the_points_inside(deep_pair, fractions):
    laz, copc = deep_pair
    every = laspy.read(laz.output)
    lo, hi = every.header.mins, every.header.maxs
    mins = np.array([lo[0] + fractions[0] * (hi[0] - lo[0]), lo[1] + fractions[1] * (hi[1] - lo[1])])
    maxs = np.array([lo[0] + fractions[2] * (hi[0] - lo[0]), lo[1] + fractions[3] * (hi[1] - lo[1])])
    inside = (every.x >= mins[0]) & (every.x <= maxs[0]) & (every.y >= mins[1]) & (every.y <= maxs[1])
    with laspy.CopcReader.open(copc.output) as reader:
        found = reader.query(bounds=Bounds(mins=mins, maxs=maxs))
    assert len(found) == int(inside.sum())
    assert np.array_equal(point_set(found), point_set(every.points[inside]))


def read_copc_structure(path):
    raw = path.read_bytes()
    header = {
        "signature": raw[:4], "global_encoding": struct.unpack_from("<H", raw, 6)[0], "version": (raw[24], raw[25]),
        "header_size": struct.unpack_from("<H", raw, 94)[0], "offset_to_points": struct.unpack_from("<I", raw, 96)[0],
        "n_vlrs": struct.unpack_from("<I", raw, 100)[0], "format_byte": raw[104],
        "record_length": struct.unpack_from("<H", raw, 105)[0], "legacy_count": struct.unpack_from("<I", raw, 107)[0],
        "scales": struct.unpack_from("<3d", raw, 131), "offsets": struct.unpack_from("<3d", raw, 155),
        "bounds": struct.unpack_from("<6d", raw, 179), "evlr_start": struct.unpack_from("<Q", raw, 235)[0],
        "n_evlrs": struct.unpack_from("<I", raw, 243)[0], "count": struct.unpack_from("<Q", raw, 247)[0],
    }
    vlrs, pos = [], header["header_size"]
    for _ in range(header["n_vlrs"]):
        user, record_id, length = struct.unpack_from("<16sHH", raw, pos + 2)
        vlrs.append((pos, user.rstrip(b"\0"), record_id, raw[pos + 54:pos + 54 + length]))
        pos += 54 + length
    return raw, header, vlrs, pos


def test_header_info_vlr_and_hierarchy_follow_copc_1_0(deep_pair):
    laz, copc = deep_pair
    raw, header, vlrs, vlr_end = read_copc_structure(copc.output)
    assert header["signature"] == b"LASF" and header["version"] == (1, 4) and header["header_size"] == 375
    assert header["format_byte"] == 7 | 0x80 and header["record_length"] == 36  # point format 7, LAZ-compressed bit
    assert header["global_encoding"] & 0x10, "WKT bit set"
    assert header["legacy_count"] == 0 and header["count"] == laz.count
    assert header["offset_to_points"] == vlr_end
    # the info VLR is the first VLR, at byte 375, user "copc" record 1, 160 bytes
    pos, user, record_id, info = vlrs[0]
    assert (pos, user, record_id, len(info)) == (375, b"copc", 1, 160)
    cx, cy, cz, halfsize, spacing, hier_offset, hier_size, gps_min, gps_max = struct.unpack_from("<5dQQ2d", info)
    assert struct.unpack_from("<11Q", info, 72) == (0,) * 11, "reserved"
    maxx, minx, maxy, miny, maxz, minz = header["bounds"]
    assert cx - halfsize <= minx and maxx <= cx + halfsize and cy - halfsize <= miny and maxy <= cy + halfsize
    assert cz - halfsize <= minz and maxz <= cz + halfsize
    assert spacing > 0 and gps_min == gps_max == 0.0
    # the laszip VLR asks for variable-size chunks; the CRS is the LAZ's WKT
    laszip = next(data for _, u, r, data in vlrs if (u, r) == (b"laszip encoded", 22204))
    assert struct.unpack_from("<I", laszip, 12)[0] == 0xFFFFFFFF
    wkt = next(data for _, u, r, data in vlrs if (u, r) == (b"LASF_Projection", 2112))
    assert wkt == next(v.record_data_bytes() for v in laspy.read(laz.output).header.vlrs if v.record_id == 2112)
    # the hierarchy EVLR, user "copc" record 1000, is where the info VLR says
    assert header["n_evlrs"] == 1
    user, record_id, length = struct.unpack_from("<16sHQ", raw, header["evlr_start"] + 2)
    assert (user.rstrip(b"\0"), record_id) == (b"copc", 1000)
    assert hier_offset == header["evlr_start"] + 60 and hier_size == length and length % 32 == 0
    entries = [struct.unpack_from("<iiiiQii", raw, hier_offset + i) for i in range(0, length, 32)]
    keys = {e[:4] for e in entries}
    assert (0, 0, 0, 0) in keys and with_ancestors(keys) == keys, "every node's parent is in the hierarchy"
    assert max(k[0] for k in keys) >= 4
    chunk_table_offset = struct.unpack_from("<q", raw, header["offset_to_points"])[0]
    assert sum(e[6] for e in entries) == laz.count
    full = [e for e in entries if e[6] > 0]
    spans = sorted((e[4], e[4] + e[5]) for e in full)
    assert spans[0][0] == header["offset_to_points"] + 8 and spans[-1][1] == chunk_table_offset
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans)), "chunks are back to back, no gaps"
    # each node's chunk decompresses alone and its points lie inside the node's cube
    scales, offsets = np.array(header["scales"]), np.array(header["offsets"])
    point_format = laspy.PointFormat(7)
    for d, x, y, z, offset, size, count in full:
        out = np.zeros(count * 36, np.uint8)
        lazrs.decompress_points_with_chunk_table(raw[offset:offset + size], laszip, out, [(count, size)],
                                                 lazrs.DecompressionSelection(lazrs.SELECTIVE_DECOMPRESS_ALL))
        points = np.frombuffer(out, point_format.dtype())
        xyz = np.column_stack([points["X"], points["Y"], points["Z"]]) * scales + offsets
        side = 2 * halfsize / 2**d
        lo = np.array([cx, cy, cz]) - halfsize + np.array([x, y, z]) * side
        assert np.all(xyz >= lo - 1e-6) and np.all(xyz <= lo + side + 1e-6), (d, x, y, z)


def test_heights_taller_than_the_extent_grow_the_cube(sample_files, tmp_path, monkeypatch):
    """A z scale of 6 makes heights span more than the 2 km grid: the cube grows, empty ancestors stay in the hierarchy."""
    laz, copc = build_pair(sample_files, tmp_path, monkeypatch, node_side=32, z_scale=6.0, fraction=0.5)
    every = laspy.read(laz.output)
    with laspy.CopcReader.open(copc.output) as reader:
        assert reader.copc_info.halfsize * 2 >= every.header.maxs[2] - every.header.mins[2]
        assert len(reader.query(level=0)) == 0, "the root is an empty ancestor"
        assert np.array_equal(point_set(reader.query()), point_set(every.points))
        lo, hi = every.header.mins, every.header.maxs
        bounds = Bounds(mins=np.array([lo[0], lo[1], (lo[2] + hi[2]) / 2]), maxs=np.array([hi[0], (lo[1] + hi[1]) / 2, hi[2]]))
        found = reader.query(bounds=bounds)
    inside = (every.y <= bounds.maxs[1]) & (every.z >= bounds.mins[2])
    assert 0 < len(found) == int(inside.sum())


def test_worker_processes_write_the_same_bytes(sample_files, tmp_path, monkeypatch):
    """Large clouds cut and compress their buckets in worker processes: the file is the one written in-process."""
    monkeypatch.setattr(copc_writer, "NODE_SIDE", 16)
    common = dict(dem=str(sample_files.dem), image=(str(sample_files.tci),), viewer=False, preview=False)
    alone = build_point_cloud(make_options(output=tmp_path / "alone.copc.laz", **common))
    monkeypatch.setattr(copc_writer, "_worker_count", lambda requested, jobs, points: 2)
    pooled = build_point_cloud(make_options(output=tmp_path / "pooled.copc.laz", **common))
    assert pooled.output.read_bytes() == alone.output.read_bytes()


def test_default_nodes_cli_and_info(sample_files, tmp_path, capsys):
    out = tmp_path / "v.laz"
    assert run(["-q", "pointcloud", "build", "--dem", str(sample_files.dem), "--image", str(sample_files.tci), "-o", str(out),
                "--format", "copc", "--no-viewer", "--no-preview", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    meta = json.loads((tmp_path / "v.laz.json").read_text())
    assert meta["assets"]["data"]["type"] == "application/vnd.laszip+copc"
    assert run(["pointcloud", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "COPC" and info["count"] == built["count"] == meta["properties"]["pc:count"]
    assert info["copc"]["nodes"] >= 1 and info["crs"]["epsg"] == 32632
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no spill folder is left"


@pytest.mark.parametrize("args", [["-o", "c.las", "--format", "copc"], ["-o", "c.copc.laz", "--format", "laz"],
                                  ["-o", "c.ply", "--format", "copc"]])
def test_copc_bad_names_are_one_line(sample_files, tmp_path, capsys, args):
    args = [a if not a.startswith("c.") else str(tmp_path / a) for a in args]
    code = run(["pointcloud", "build", "--dem", str(sample_files.dem), "--image", str(sample_files.tci), *args])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "Traceback" not in err and len(err.splitlines()) == 1 and err.startswith("error:")
    assert list(tmp_path.iterdir()) == []


def test_levels_and_cube_plan():
    assert trailing_zeros(np.array([0, 1, 2, 3, 4, 8, 12, 1024]), 5).tolist() == [5, 0, 1, 0, 2, 3, 2, 5]
    layout = plan_layout(10980, 10980, 10.0, 10.0, 300000.0, 5100000.0)
    assert layout.depth == 6 and layout.cell % 10.0 == 0 and layout.side >= 109800 and layout.cell / 10 <= 256
    assert layout.y0 == 5100000.0 - layout.side and layout.bucket_depth == 3
    flat, tall = plan_cube(layout, 100.0, 4000.0), plan_cube(layout, 0.0, layout.side * 3)
    assert flat.shift == 0 and flat.halfsize == layout.side / 2 and tall.shift == 2 and tall.halfsize == layout.side * 2
