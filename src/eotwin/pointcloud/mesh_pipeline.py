"""DEM + image -> coloured terrain mesh (PLY and GLB): the DEM grid is already a mesh, two triangles per cell.

Unlike the point cloud, a mesh is built in memory (Open3D and glTF need whole arrays), so the grid is
sized to a memory budget that keeps the whole run under a DeltaTwin container's 2 GB: a grid beyond it
is refused with the spacing that fits, except when the mesh is to be simplified anyway (``--triangles``):
then it is first built at the finest spacing that fits, and the result says so.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from affine import Affine

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window
from eotwin.io.raster import gdal_cache_env
from eotwin.pointcloud.pipeline import GDAL_CACHE_MB, overlap_grid
from eotwin.pointcloud.sources import DemSource, ImageSource, MaskSource
from eotwin.progress import ProgressReporter, ensure_progress

MESH_MEMORY_BUDGET = 1_500 * 2**20  # bytes of mesh arrays; the libraries and rasters take the rest of 2 GiB
# Peak bytes per grid cell, measured on 0.25-4 M cells and by benchmarks/memory.py (2026-12-05):
# about 110-250 for the grid mesh, normals and both writers; Open3D's quadric decimation adds about 1,000-1,300
# (at 1,100 per cell a full tile's simplified mesh peaked at 2000 MiB: 1,500 leaves room)
# (its own copy of vertices, triangles and colours as doubles, plus a quadric per vertex).
MESH_BYTES_PER_CELL = 250
SIMPLIFY_BYTES_PER_CELL = 1_500

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshResult:
    ply: Path | None
    glb: Path | None
    vertices: int
    triangles: int
    grid: Grid
    coarsened_from: float | None = None  # the spacing asked for, when the mesh was built coarser to fit memory


def cells_that_fit(simplify: bool, budget: int | None = None) -> int:
    """How many grid cells a mesh may have within ``budget`` bytes (default :data:`MESH_MEMORY_BUDGET`)."""
    budget = MESH_MEMORY_BUDGET if budget is None else budget
    return budget // (SIMPLIFY_BYTES_PER_CELL if simplify else MESH_BYTES_PER_CELL)


def spacing_that_fits(grid: Grid, max_cells: int) -> float:
    """The finest spacing (rounded up to 0.1 unit) at which ``grid``'s extent has at most ``max_cells`` cells."""
    left, bottom, right, top = grid.bounds
    spacing = math.sqrt((right - left) * (top - bottom) / max_cells)
    while True:
        spacing = math.ceil(spacing * 10 + 1e-9) / 10
        if regrid(grid, spacing).width * regrid(grid, spacing).height <= max_cells:
            return spacing
        spacing *= 1.01


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
        extent = overlap_grid(image_src.grid, [dem_src.grid] + ([mask_src.grid] if mask_src else []))
        grid = regrid(extent, resolution)
        max_cells = cells_that_fit(simplify=bool(target_triangles))
        coarsened_from = None
        if grid.width * grid.height > max_cells:
            fits = spacing_that_fits(extent, max_cells)
            asked = abs(grid.transform.a)
            if not target_triangles:
                raise EotwinError(f"a {grid.height} x {grid.width} mesh at {asked:g} m does not fit the memory budget "
                                  f"({MESH_MEMORY_BUDGET // 2**20} MiB of arrays): pass --resolution {fits:g} or coarser, "
                                  "or --triangles to simplify")
            log.warning("meshing at %g instead of %g before simplifying to %s triangles: a %d x %d grid would not fit "
                        "the memory budget", fits, asked, f"{target_triangles:,}", grid.height, grid.width)
            grid, coarsened_from = regrid(extent, fits), asked
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
    return MeshResult(ply_path, glb_path, len(mesh.vertices), len(mesh.faces), grid, coarsened_from)
