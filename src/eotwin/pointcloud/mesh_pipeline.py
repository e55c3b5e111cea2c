"""DEM + image -> coloured terrain mesh (PLY and GLB): the DEM grid is already a mesh, two triangles per cell.

Unlike the point cloud, a mesh is built in memory (Open3D and glTF need whole arrays), so the grid
is capped and ``resolution`` lets a large area be meshed at a coarser spacing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from affine import Affine

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window
from eotwin.io.raster import gdal_cache_env
from eotwin.pointcloud.pipeline import GDAL_CACHE_MB, overlap_grid
from eotwin.pointcloud.sources import DemSource, ImageSource, MaskSource
from eotwin.progress import ProgressReporter, ensure_progress

MAX_MESH_CELLS = 16_000_000


@dataclass(frozen=True)
class MeshResult:
    ply: Path | None
    glb: Path | None
    vertices: int
    triangles: int
    grid: Grid


def regrid(grid: Grid, resolution: float | None) -> Grid:
    """``grid``'s extent at ``resolution`` (same CRS, north-up); the grid itself when None."""
    if resolution is None:
        return grid
    if resolution <= 0:
        raise EotwinError(f"resolution must be positive, got {resolution}")
    left, bottom, right, top = grid.bounds
    width = max(2, int((right - left) // resolution))
    height = max(2, int((top - bottom) // resolution))
    return Grid(Affine(resolution, 0, left, 0, -resolution, top), width, height, grid.crs)


def build_mesh(dem: str, image: tuple[str, ...], output: Path, *, resolution: float | None = None,
               target_triangles: int | None = None, z_scale: float = 1.0, mask: str | None = None,
               glb: bool = True, progress: ProgressReporter | None = None) -> MeshResult:
    """Write ``output`` (.ply) and, with ``glb``, the same mesh as ``output.with_suffix('.glb')``."""
    from eotwin.io.mesh import write_mesh_glb, write_mesh_ply
    from eotwin.pointcloud.core import validity
    from eotwin.pointcloud.mesh import grid_mesh, simplify

    progress = ensure_progress(progress)
    output = Path(output)
    if output.suffix.lower() not in (".ply", ".glb"):
        raise EotwinError(f"{output}: mesh output must end in .ply or .glb")
    with gdal_cache_env(GDAL_CACHE_MB), contextlib.ExitStack() as stack:
        dem_src = DemSource(dem, stack)
        image_src = ImageSource(image, stack)
        mask_src = MaskSource(mask, stack) if mask else None
        grid = regrid(overlap_grid(image_src.grid, [dem_src.grid] + ([mask_src.grid] if mask_src else [])), resolution)
        if grid.width * grid.height > MAX_MESH_CELLS:
            raise EotwinError(f"a {grid.height} x {grid.width} mesh is too large to build in memory; "
                              "pass --resolution to mesh at a coarser spacing")
        for source in (dem_src, image_src, mask_src):
            if source is not None:
                source.attach(grid)
                stack.callback(source.close)
        whole = Window(0, 0, grid.height, grid.width)
        z = dem_src.read(whole)
        rgb, rgb_valid = image_src.read(whole)
        valid = validity(z, None, rgb_valid, mask_src.read(whole) if mask_src else None)
    with progress.task("meshing", total=3) as task:
        mesh = grid_mesh(z, valid, rgb, grid, z_scale)
        task.advance()
        if len(mesh.faces) == 0:
            raise EotwinError("no valid cells to mesh (DEM/image nodata or masked everywhere)")
        if target_triangles and target_triangles < len(mesh.faces):
            mesh = simplify(mesh, target_triangles)
        task.advance()
        ply_path = output.with_suffix(".ply")
        write_mesh_ply(mesh, ply_path, grid.crs)
        glb_path = write_mesh_glb(mesh, output.with_suffix(".glb"), grid.crs) if glb or output.suffix.lower() == ".glb" else None
        task.advance()
    return MeshResult(ply_path, glb_path, len(mesh.vertices), len(mesh.faces), grid)
