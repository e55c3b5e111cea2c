"""A deterministic, georeferenced sample scene (pure: arrays in memory, no files).

An alpine valley in WGS 84 / UTM zone 32N (EPSG:32632) near Aosta: mountains, a sinuous valley
rising to the north, a lake in a depression, and land cover that follows elevation and slope
(water, forest, grass, rock, snow). The elevation is an analytic function of UTM coordinates, so
any grid (the 10 m image grid, the 1-arcsecond geographic DEM grid) samples the same surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer

from eotwin.geo.grid import Grid
from eotwin.sample.spectra import CLASS_SPECTRA, CLASS_TO_SCL, FOREST, GRASS, ROCK, SNOW, WATER
from eotwin.sentinel2.bands import S2_BANDS

SCENE_CRS = CRS.from_epsg(32632)
DEM_CRS = CRS.from_epsg(4326)
ORIGIN = (367_000.0, 5_066_000.0)  # top-left corner of the image grid, metres (UTM 32N)
IMAGE_RESOLUTION = 10.0
DEFAULT_SIZE = 600  # pixels per side at 10 m: a 6 km square
DEM_RESOLUTION_DEG = 1.0 / 3600.0  # one arcsecond, as Copernicus GLO-30
DEM_MARGIN_M = 300.0
LAKE_LEVEL_M = 1035.0


@dataclass(frozen=True)
class SampleScene:
    image_grid: Grid
    dem_grid: Grid
    dem: np.ndarray  # float32 metres on dem_grid
    elevation: np.ndarray  # float32 metres on image_grid (exact analytic values)
    land_cover: np.ndarray  # uint8 class index on image_grid (see spectra.LAND_COVER_NAMES)
    surface_reflectance: np.ndarray  # float32 (13, H, W) in S2_BANDS order, cloud-free
    cloud: np.ndarray  # bool: cloud pixels (seen in the L2A image, flagged in SCL)
    cloud_shadow: np.ndarray  # bool
    nodata: np.ndarray  # bool: outside the swath (DN 0 in the image)
    bands: tuple[str, ...] = S2_BANDS


def elevation_at(x: np.ndarray, y: np.ndarray, size_m: float = DEFAULT_SIZE * IMAGE_RESOLUTION) -> np.ndarray:
    """Terrain height in metres at UTM 32N coordinates (x, y): smooth, deterministic, analytic."""
    u = (np.asarray(x, dtype=np.float64) - ORIGIN[0]) / size_m
    v = (ORIGIN[1] - np.asarray(y, dtype=np.float64)) / size_m  # 0 at the top (north), 1 at the bottom
    north = 1.0 - v
    centre = 0.47 + 0.09 * np.sin(2.0 * np.pi * north * 0.9)
    d = u - centre
    z = 1000.0 + 260.0 * north + 1450.0 * (1.0 - np.exp(-((d / 0.22) ** 2)))
    for pu, pv, height, sigma in ((0.12, 0.20, 700.0, 0.11), (0.86, 0.72, 850.0, 0.13), (0.82, 0.15, 500.0, 0.08), (0.18, 0.85, 450.0, 0.10)):
        z += height * np.exp(-(((u - pu) ** 2 + (v - pv) ** 2) / (2 * sigma**2)))
    z += 90.0 * np.sin(13.0 * u + 3.0 * v) * np.cos(11.0 * v - 2.0 * u) + 35.0 * np.sin(29.0 * u + 1.0) * np.sin(31.0 * v)
    z -= 300.0 * np.exp(-(((u - 0.50) ** 2) / (2 * 0.06**2) + ((v - 0.62) ** 2) / (2 * 0.09**2)))  # lake basin
    return np.maximum(z, LAKE_LEVEL_M)


def _slope_deg(z: np.ndarray, res: float) -> np.ndarray:
    gy, gx = np.gradient(z, res)
    return np.degrees(np.arctan(np.hypot(gx, gy)))


def _hillshade(z: np.ndarray, res: float, azimuth: float = 150.0, altitude: float = 40.0) -> np.ndarray:
    gy, gx = np.gradient(z, res)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.radians(azimuth), np.radians(altitude)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(shade, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation (FFT filter, deterministic)."""
    white = rng.standard_normal(shape)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * scale_px) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(white) * kernel, s=shape)
    return (field - field.mean()) / (field.std() + 1e-12)


def dem_grid_for(image_grid: Grid) -> Grid:
    """A geographic 1-arcsecond grid covering the image plus a margin (like a Copernicus DEM crop)."""
    left, bottom, right, top = image_grid.bounds
    to_geo = Transformer.from_crs(image_grid.crs, DEM_CRS, always_xy=True)
    lon0, lat0, lon1, lat1 = to_geo.transform_bounds(left - DEM_MARGIN_M, bottom - DEM_MARGIN_M, right + DEM_MARGIN_M, top + DEM_MARGIN_M)
    res = DEM_RESOLUTION_DEG
    lon0 = np.floor(lon0 / res) * res
    lat1 = np.ceil(lat1 / res) * res
    width = int(np.ceil((lon1 - lon0) / res))
    height = int(np.ceil((lat1 - lat0) / res))
    return Grid(Affine(res, 0.0, lon0, 0.0, -res, lat1), width, height, DEM_CRS)


NOISE_TILE = 2048  # beyond this size the noise fields repeat with this period (FFT noise is periodic)


@dataclass(frozen=True)
class SceneRows:
    """Rows ``row0 .. row0 + height`` of a sample scene (the image-grid layers of :class:`SampleScene`)."""

    row0: int
    elevation: np.ndarray
    land_cover: np.ndarray
    surface_reflectance: np.ndarray
    cloud: np.ndarray
    cloud_shadow: np.ndarray
    nodata: np.ndarray


class SceneGenerator:
    """The sample scene a block of rows at a time, so a full 10980 px tile never sits in memory.

    Every layer is a function of the pixel's position: the analytic relief, slopes from its rows with a
    one-row halo, and noise fields (land-cover jitter, texture, clouds) read from FFT noise that is
    periodic. Up to :data:`NOISE_TILE` px the noise has the scene's own size, so any split into rows gives
    exactly the arrays of one pass.
    """

    def __init__(self, size: int = DEFAULT_SIZE, seed: int = 42) -> None:
        self.size = size
        self.image_grid = Grid(Affine(IMAGE_RESOLUTION, 0.0, ORIGIN[0], 0.0, -IMAGE_RESOLUTION, ORIGIN[1]), size, size,
                               SCENE_CRS)
        self.dem_grid = dem_grid_for(self.image_grid)
        rng = np.random.default_rng(seed)
        period = min(size, NOISE_TILE)
        self._jitter = _smooth_noise(rng, (period, period), 6.0)
        self._texture = _smooth_noise(rng, (period, period), 1.5)
        self._cloud = _smooth_noise(rng, (period, period), 18.0)

    @property
    def _size_m(self) -> float:
        return DEFAULT_SIZE * IMAGE_RESOLUTION  # the relief keeps its shape whatever the crop size

    def dem(self, block_rows: int = 512) -> np.ndarray:
        """The 1-arcsecond DEM (float32), computed a block of rows at a time."""
        grid = self.dem_grid
        to_utm = Transformer.from_crs(DEM_CRS, SCENE_CRS, always_xy=True)
        out = np.empty(grid.shape, dtype=np.float32)
        for r0 in range(0, grid.height, block_rows):
            lon, lat = grid.pixel_centres(rows=slice(r0, min(r0 + block_rows, grid.height)))
            dem_x, dem_y = to_utm.transform(np.asarray(lon), np.asarray(lat))
            out[r0:r0 + lon.shape[0]] = elevation_at(dem_x, dem_y, self._size_m)
        return out

    def _elevation(self, r0: int, r1: int) -> np.ndarray:
        xs, ys = self.image_grid.pixel_centres(rows=slice(r0, r1))
        return elevation_at(xs, ys, self._size_m).astype(np.float32)

    def _noise(self, field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        period = field.shape[0]
        return field[np.ix_(rows % period, cols % period)]

    def rows(self, r0: int, r1: int) -> SceneRows:
        """Rows ``r0 .. r1`` of every image-grid layer."""
        size = self.size
        h0, h1 = max(r0 - 1, 0), min(r1 + 1, size)  # one row of halo for the slopes
        halo = self._elevation(h0, h1)
        inner = slice(r0 - h0, r0 - h0 + (r1 - r0))
        elevation = halo[inner]
        slope = _slope_deg(halo, IMAGE_RESOLUTION)[inner]
        rows, cols = np.arange(r0, r1), np.arange(size)
        z = elevation + 120.0 * self._noise(self._jitter, rows, cols)
        land_cover = np.full(elevation.shape, GRASS, dtype=np.uint8)
        land_cover[(z > 1100) & (z < 2050) & (slope > 9)] = FOREST
        land_cover[(z >= 2300) | ((z > 1900) & (slope > 35))] = ROCK
        land_cover[z >= 2800] = SNOW
        land_cover[elevation <= LAKE_LEVEL_M + 0.01] = WATER

        texture = 1.0 + 0.07 * self._noise(self._texture, rows, cols)
        shade = (0.55 + 0.55 * _hillshade(halo.astype(np.float64), IMAGE_RESOLUTION))[inner]
        shade[land_cover == WATER] = 1.0
        surface = CLASS_SPECTRA[land_cover].transpose(2, 0, 1) * (texture * shade).astype(np.float32)[None]
        surface = np.clip(surface, 0.001, 1.0).astype(np.float32)

        cloud = self._noise(self._cloud, rows, cols) > 2.0
        shift = max(1, size // 40)
        shadow = np.zeros_like(cloud)
        src_rows = rows - shift
        ok_rows = src_rows >= 0
        if ok_rows.any():
            shifted = self._noise(self._cloud, src_rows[ok_rows], cols[: size - shift]) > 2.0
            shadow[np.flatnonzero(ok_rows)[:, None], np.arange(shift, size)[None, :]] = shifted
        shadow &= ~cloud
        grid_rows = rows[:, None]
        nodata = cols[None, :] + 2 * (size - grid_rows) < size // 3  # swath edge in the lower-left corner
        return SceneRows(r0, elevation, land_cover, surface, cloud, shadow, nodata)


def make_scene(size: int = DEFAULT_SIZE, seed: int = 42) -> SampleScene:
    """Build the sample scene in memory; ``size`` pixels per side at 10 m. Same inputs, same arrays."""
    gen = SceneGenerator(size, seed)
    part = gen.rows(0, size)
    return SampleScene(gen.image_grid, gen.dem_grid, gen.dem(), part.elevation, part.land_cover,
                       part.surface_reflectance, part.cloud, part.cloud_shadow, part.nodata)


def scene_scl(scene: SampleScene | SceneRows) -> np.ndarray:
    """The scene classification an L2A processor would give (uint8 SCL codes)."""
    scl = CLASS_TO_SCL[scene.land_cover].copy()
    scl[scene.cloud_shadow] = 3
    scl[scene.cloud] = 9
    scl[scene.nodata] = 0
    return scl


def observed_reflectance(scene: SampleScene | SceneRows) -> np.ndarray:
    """What an L2A product shows: the surface, with clouds bright and shadows darkened."""
    refl = scene.surface_reflectance.copy()
    refl[:, scene.cloud_shadow] *= 0.35
    refl[:, scene.cloud] = 0.62
    return refl
