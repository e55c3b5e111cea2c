"""The lead's part of the point-cloud output: reading clouds back, the HTML viewer, the PNG preview, meshes."""

import base64
import json
import re
import struct

import laspy
import numpy as np
import pytest
from affine import Affine
from pyproj import CRS

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid
from eotwin.io.mesh import write_mesh_glb, write_mesh_ply
from eotwin.io.pointcloud_reader import parse_ply_header, read_points
from eotwin.pointcloud.mesh import grid_mesh, simplify
from eotwin.pointcloud.preview import render_oblique, render_preview
from eotwin.pointcloud.viewer import write_viewer

UTM32 = CRS.from_epsg(32632)


def write_las(path, n=5000, seed=0):
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([367_000 + rng.random(n) * 1000, 5_060_000 + rng.random(n) * 1000, 1000 + rng.random(n) * 500])
    rgb = rng.integers(0, 256, (n, 3)).astype(np.uint16)
    header = laspy.LasHeader(point_format=7, version="1.4")
    header.scales = [0.01, 0.01, 0.01]
    header.offsets = [367_000, 5_060_000, 0]
    header.add_crs(UTM32)
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz.T
    las.red, las.green, las.blue = (rgb * 257).T
    las.write(str(path))
    return np.round(xyz, 2), rgb.astype(np.uint8)


def test_read_points_las_full_and_decimated(tmp_path):
    xyz, rgb = write_las(tmp_path / "a.laz")
    full = read_points(tmp_path / "a.laz")
    assert full.total_points == 5000 and np.allclose(full.xyz, xyz, atol=0.006)
    assert np.array_equal(full.rgb, rgb)
    assert CRS.from_wkt(full.crs_wkt) == UTM32
    sub = read_points(tmp_path / "a.laz", max_points=1000, seed=1)
    assert 800 < len(sub.xyz) < 1200 and sub.total_points == 5000
    # every decimated point is one of the originals, with its own colour
    keys = {tuple(p) for p in np.round(full.xyz, 2)}
    assert all(tuple(p) in keys for p in np.round(sub.xyz, 2))


def test_read_points_rejects_bad_input(tmp_path):
    with pytest.raises(EotwinError, match="no such file"):
        read_points(tmp_path / "missing.laz")
    (tmp_path / "x.laz").write_bytes(b"not a las file at all")
    with pytest.raises(EotwinError, match="not a readable"):
        read_points(tmp_path / "x.laz")
    (tmp_path / "x.xyz").write_text("1 2 3")
    with pytest.raises(EotwinError, match="unsupported"):
        read_points(tmp_path / "x.xyz")


def test_viewer_embeds_the_points_offline(tmp_path):
    xyz, rgb = write_las(tmp_path / "a.laz", n=3000)
    html = write_viewer(tmp_path / "a.laz", tmp_path / "a.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained, no network
    meta = json.loads(re.search(r'<script id="meta" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert meta["total_points"] == 3000 and "32632" in meta["crs"]
    local = np.frombuffer(base64.b64decode(re.search(r'<script id="xyz"[^>]*>(.*?)</script>', html, re.S).group(1)), "<f4")
    colours = np.frombuffer(base64.b64decode(re.search(r'<script id="rgb"[^>]*>(.*?)</script>', html, re.S).group(1)), "u1")
    assert local.size == 3 * 3000 and colours.size == 3 * 3000
    restored = local.reshape(-1, 3).astype(np.float64) + np.array(meta["centre"])
    assert np.allclose(np.sort(restored[:, 2]), np.sort(xyz[:, 2]), atol=0.01)


def test_viewer_decimates_to_max_points(tmp_path):
    write_las(tmp_path / "a.laz", n=20000)
    html = write_viewer(tmp_path / "a.laz", tmp_path / "a.html", max_points=2000).read_text()
    local = base64.b64decode(re.search(r'<script id="xyz"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert 1600 * 12 < len(local) < 2400 * 12


def test_preview_draws_a_peak_above_the_plain():
    g = np.linspace(-1000, 1000, 200)
    x, y = np.meshgrid(g, g)
    z = 800 * np.exp(-(x**2 + y**2) / (2 * 300**2))
    rgb = np.zeros((x.size, 3), np.uint8)
    rgb[:, 0] = np.where(z.ravel() > 400, 255, 0)  # the peak is red, the plain black
    image = render_oblique(np.column_stack([x.ravel(), y.ravel(), z.ravel()]), rgb, width=400, height=300, azimuth_deg=0)
    red_rows = np.nonzero((image[..., 0] > 150).any(axis=1))[0]
    assert red_rows.size and red_rows.min() < 150  # the peak rises into the upper half of the picture


def test_render_preview_writes_png(tmp_path):
    write_las(tmp_path / "a.laz")
    png = render_preview(tmp_path / "a.laz", tmp_path / "a.png", width=320, height=200)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def small_grid_mesh():
    grid = Grid(Affine(10, 0, 367_000, 0, -10, 5_060_000), 4, 3, UTM32)
    z = np.arange(12, dtype=np.float32).reshape(3, 4) * 10 + 1000
    valid = np.ones((3, 4), bool)
    valid[0, 0] = False
    rgb = np.stack([np.full((3, 4), v, np.uint8) for v in (10, 20, 30)])
    return grid, z, valid, rgb


def test_grid_mesh_two_triangles_per_complete_cell():
    grid, z, valid, rgb = small_grid_mesh()
    mesh = grid_mesh(z, valid, rgb, grid, z_scale=2.0)
    assert len(mesh.vertices) == 11  # one missing pixel makes no vertex
    assert len(mesh.faces) == 2 * (6 - 1)  # 3 x 2 cells, one touches the missing pixel
    x, y = grid.pixel_centres()
    assert np.allclose(mesh.vertices[:, 0], x[valid]) and np.allclose(mesh.vertices[:, 2], z[valid] * 2.0)
    # counter-clockwise seen from above: every face normal points up
    tri = mesh.vertices[mesh.faces]
    assert (np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])[:, 2] > 0).all()
    assert (mesh.normals[:, 2] > 0).all()


def test_mesh_writers_round_trip(tmp_path):
    grid, z, valid, rgb = small_grid_mesh()
    mesh = grid_mesh(z, valid, rgb, grid)
    ply = write_mesh_ply(mesh, tmp_path / "m.ply", UTM32)
    count, dtype, offset, comments = parse_ply_header(ply)
    assert count == len(mesh.vertices) and any(c.startswith("origin") for c in comments)
    sidecar = json.loads((tmp_path / "m.ply.json").read_text())
    assert CRS.from_wkt(sidecar["crs_wkt"]) == UTM32 and sidecar["triangles"] == len(mesh.faces)
    glb = write_mesh_glb(mesh, tmp_path / "m.glb", UTM32).read_bytes()
    magic, version, total = struct.unpack("<III", glb[:12])
    assert magic == 0x46546C67 and version == 2 and total == len(glb)
    json_len = struct.unpack("<I", glb[12:16])[0]
    gltf = json.loads(glb[20:20 + json_len])
    assert gltf["accessors"][0]["count"] == len(mesh.vertices) and gltf["accessors"][3]["count"] == 3 * len(mesh.faces)
    trimesh = pytest.importorskip("trimesh")
    loaded = trimesh.load(tmp_path / "m.ply", process=False)
    assert loaded.faces.shape == mesh.faces.shape


def test_simplify_with_open3d_keeps_the_surface():
    pytest.importorskip("open3d")
    g = np.linspace(0, 1, 60)
    grid = Grid(Affine(10, 0, 0, 0, -10, 600), 60, 60, UTM32)
    z = (np.add.outer(g, g) * 100).astype(np.float32)  # a plane: simplification must stay on it
    mesh = grid_mesh(z, np.ones((60, 60), bool), np.full((3, 60, 60), 128, np.uint8), grid)
    small = simplify(mesh, 500)
    assert len(small.faces) <= 500
    # plane z = 100 * ((row + col) / 59): recover row/col from x/y and compare
    col = (small.vertices[:, 0] - 5) / 10
    row = (600 - 5 - small.vertices[:, 1]) / 10
    assert np.allclose(small.vertices[:, 2], 100 * (row + col) / 59, atol=0.05)
