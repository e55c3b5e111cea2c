"""A coloured terrain mesh from a raster grid: the grid already is a mesh, two triangles per cell.

Pure: arrays in, a :class:`~eotwin.geo.pointdata.TerrainMesh` out. Normals are computed here with numpy; Open3D (the
optional ``mesh`` extra) is used only to simplify a mesh, in :func:`simplify`.
"""

from __future__ import annotations

import numpy as np

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid
from eotwin.geo.pointdata import TerrainMesh

NORMAL_CHUNK_FACES = 1 << 20  # faces per block: the per-face temporaries stay at ~100 MB whatever the mesh


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (unit length; straight up for isolated vertices).

    Faces are taken a block at a time and summed per vertex with ``bincount``, so the memory beyond the
    result is bounded by the block, not the mesh (a 10 m grid of a tile has 240 M faces).
    """
    origin = vertices.min(axis=0) if len(vertices) else np.zeros(3)
    normals = np.zeros((len(vertices), 3), dtype=np.float64)
    for start in range(0, len(faces), NORMAL_CHUNK_FACES):
        block = faces[start:start + NORMAL_CHUNK_FACES]
        p0, p1, p2 = (vertices[block[:, k]] - origin for k in range(3))
        face_n = np.cross(p1 - p0, p2 - p0)
        del p0, p1, p2
        for corner in range(3):
            for axis in range(3):
                normals[:, axis] += np.bincount(block[:, corner], weights=face_n[:, axis], minlength=len(vertices))
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    up = np.array([0.0, 0.0, 1.0])
    normals = np.where(length > 0, normals / np.where(length > 0, length, 1), up)
    return normals.astype(np.float32)


def grid_mesh(z: np.ndarray, valid: np.ndarray, rgb: np.ndarray, grid: Grid, z_scale: float = 1.0) -> TerrainMesh:
    """Vertices at pixel centres; two triangles for every cell whose four corners are valid.

    ``rgb`` is (3, H, W) uint8. Invalid pixels make no vertex, so holes stay holes.
    """
    if z.shape != grid.shape or valid.shape != grid.shape or rgb.shape[1:] != grid.shape:
        raise EotwinError("mesh inputs must share the grid's shape")
    count = int(valid.sum())
    if count >= np.iinfo(np.uint32).max:
        raise EotwinError(f"{count:,} vertices do not fit uint32 face indices; mesh at a coarser spacing")
    # uint32 indices with the maximum as "no vertex": half the memory of int64 on a big grid
    none = np.iinfo(np.uint32).max
    index = np.full(grid.shape, none, dtype=np.uint32)
    index[valid] = np.arange(count, dtype=np.uint32)
    rows, cols = np.nonzero(valid)
    t = grid.transform
    vertices = np.empty((count, 3), dtype=np.float64)
    vertices[:, 0] = t.c + (cols + 0.5) * t.a + (rows + 0.5) * t.b
    vertices[:, 1] = t.f + (cols + 0.5) * t.d + (rows + 0.5) * t.e
    del rows, cols
    vertices[:, 2] = z[valid] * float(z_scale)
    colours = np.ascontiguousarray(rgb[:, valid].T, dtype=np.uint8)
    a, b = index[:-1, :-1], index[:-1, 1:]  # top-left, top-right
    c, d = index[1:, :-1], index[1:, 1:]  # bottom-left, bottom-right
    cell_ok = (a != none) & (b != none) & (c != none) & (d != none)
    n_cells = int(cell_ok.sum())
    faces = np.empty((2 * n_cells, 3), dtype=np.uint32)
    # rows grow southwards on a north-up grid: (a, c, b) and (b, c, d) are counter-clockwise from above
    for column, corner in enumerate((a, c, b)):
        faces[:n_cells, column] = corner[cell_ok]
    for column, corner in enumerate((b, c, d)):
        faces[n_cells:, column] = corner[cell_ok]
    del index, cell_ok
    if grid.transform.e > 0:  # south-up grid: flip winding
        faces = faces[:, [0, 2, 1]]
    return TerrainMesh(vertices, faces, colours, vertex_normals(vertices, faces))


def simplify(mesh: TerrainMesh, target_triangles: int) -> TerrainMesh:
    """Quadric-error simplification with Open3D (optional extra ``mesh``)."""
    try:
        import open3d as o3d
    except ImportError:
        raise EotwinError("mesh simplification needs Open3D: pip install 'eotwin[mesh]' (and Debian's libusb-1.0-0)") from None
    if target_triangles <= 0:
        raise EotwinError("target triangle count must be positive")
    origin = mesh.origin
    o3 = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices - origin),
                                   o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)))
    o3.vertex_colors = o3d.utility.Vector3dVector(mesh.colours.astype(np.float64) / 255.0)
    simplified = o3.simplify_quadric_decimation(int(target_triangles))
    simplified.remove_unreferenced_vertices()
    simplified.compute_vertex_normals()
    vertices = np.asarray(simplified.vertices) + origin
    faces = np.asarray(simplified.triangles).astype(np.uint32)
    colours = np.clip(np.rint(np.asarray(simplified.vertex_colors) * 255), 0, 255).astype(np.uint8)
    return TerrainMesh(vertices, faces, colours, np.asarray(simplified.vertex_normals, dtype=np.float32))
