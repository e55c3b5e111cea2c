"""Sentinel-2 products in and out: real SAFE metadata, SAFE folders and zips, L1C/L2A stack conventions."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS

from eotwin.errors import EotwinError
from eotwin.geo.grid import Grid, Window
from eotwin.sentinel2 import metadata, radiometry
from eotwin.sentinel2.bands import L2A_BANDS, NATIVE_RESOLUTION, S2_BANDS
from eotwin.sentinel2.metadata import AngleGrid, parse_product_metadata, parse_tile_metadata
from eotwin.sentinel2.products import open_l1c, open_l2a_reference
from eotwin.sentinel2.reading import BandReader, read_toa

L1C_0301 = "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248.SAFE"
L1C_0509 = "S2A_MSIL1C_20230216T044851_N0509_R076_T46UEU_20230216T00000.SAFE"
L1C_0510 = "S2A_MSIL1C_20240101T102431_N0510_R065_T30NWM_20240101T122107.SAFE"
L2A_0400 = "S2B_MSIL2A_20220413T150759_N0400_R025_T33XWJ_20220414T082126.SAFE"
TL_0509 = "GRANULE/L1C_T46UEU_A039970_20230216T045412/MTD_TL.xml"
TL_0301 = "GRANULE/L1C_T46RER_A032448_20210908T043714/MTD_TL.xml"


def _safe(shared_fixtures: Path, name: str) -> Path:
    return shared_fixtures / "safe" / name


# ----------------------------------------------------------------------------- real metadata
@pytest.mark.parametrize(
    ("name", "baseline", "offset"),
    [(L1C_0301, "03.01", 0.0), (L1C_0509, "05.09", -1000.0), (L1C_0510, "05.10", -1000.0)],
)
def test_radiometric_offset_follows_the_processing_baseline(shared_fixtures, name, baseline, offset):
    path = _safe(shared_fixtures, name) / "MTD_MSIL1C.xml"
    meta = parse_product_metadata(path.read_bytes(), str(path))
    assert meta.level == "L1C"
    assert meta.processing_baseline == baseline
    assert meta.spacecraft == "S2A"
    assert meta.quantification == 10000.0
    assert meta.offsets == dict.fromkeys(S2_BANDS, offset)
    # 13 band files + TCI, named by band
    assert {b for b, _ in meta.image_files} == {*S2_BANDS, "TCI"}
    assert meta.image_files[("B8A", 20)].endswith("_B8A")


def test_l2a_metadata_gives_boa_offsets_and_files_per_resolution(shared_fixtures):
    path = _safe(shared_fixtures, L2A_0400) / "MTD_MSIL2A.xml"
    meta = parse_product_metadata(path.read_bytes(), str(path))
    assert (meta.level, meta.spacecraft, meta.processing_baseline) == ("L2A", "S2B", "04.00")
    assert meta.quantification == 10000.0
    assert set(meta.offsets.values()) == {-1000.0}
    assert (
        ("SCL", 20) in meta.image_files
        and ("B02", 10) in meta.image_files
        and ("B02", 60) in meta.image_files
    )
    assert ("B10", 60) not in meta.image_files


def test_angle_grids_parsed_from_real_tile_metadata(shared_fixtures):
    path = _safe(shared_fixtures, L1C_0509) / TL_0509
    tile = parse_tile_metadata(path.read_bytes(), str(path))
    assert tile.crs_code == "EPSG:32646"
    assert tile.sizes == {10: (10980, 10980), 20: (5490, 5490), 60: (1830, 1830)}
    assert tile.origins[10] == (499980.0, 5400000.0)
    angles = tile.angles
    assert angles.shape == (23, 23) and angles.step == 5000.0
    assert angles.sun_zenith[0, 0] == pytest.approx(62.9568)
    assert set(angles.view_zenith) == set(S2_BANDS)
    assert tile.detectors["B02"] == 6  # six detectors' grids merged for this tile
    for band in S2_BANDS:
        assert angles.view_zenith[band].shape == (23, 23)
        assert np.isfinite(angles.view_zenith[band]).all() and np.isfinite(angles.view_azimuth[band]).all()
        assert (angles.view_zenith[band] >= 0).all() and (angles.view_zenith[band] < 13).all()
    # the grid's mean is the metadata's mean sun angle
    assert np.mean(angles.sun_zenith) == pytest.approx(tile.mean_sun[0], abs=1e-3)
    # node [0, 0] is seen by one detector only (detector 5 of B01: 3.97018 deg in the file)
    assert angles.view_zenith["B01"][0, 0] == pytest.approx(3.97018)


def test_older_tile_metadata_has_two_detectors(shared_fixtures):
    path = _safe(shared_fixtures, L1C_0301) / TL_0301
    tile = parse_tile_metadata(path.read_bytes(), str(path))
    assert tile.detectors["B04"] == 2
    assert tile.angles.means()["sun_zenith"] == pytest.approx(tile.mean_sun[0], abs=1e-3)


def test_bad_metadata_is_a_one_line_error(shared_fixtures, tmp_path):
    with pytest.raises(EotwinError, match="not valid XML"):
        parse_product_metadata(b"<broken", "x.xml")
    with pytest.raises(EotwinError, match="no sun or viewing angle grids"):
        parse_tile_metadata(
            b"<Tile><HORIZONTAL_CS_CODE>EPSG:32632</HORIZONTAL_CS_CODE><Geoposition resolution='10'>"
            b"<ULX>0</ULX><ULY>0</ULY></Geoposition></Tile>",
            "MTD_TL.xml",
        )


# ----------------------------------------------------------------------------- angle interpolation
def test_angle_grid_interpolation_is_bilinear_and_wraps_azimuth():
    crs = CRS.from_epsg(32632)
    grid = Grid(Affine(2500.0, 0, 0.0, 0, -2500.0, 10000.0), 4, 4, crs)  # pixel centres at 1250, 3750, ...
    zen = np.array([[10.0, 20.0, 30.0], [20.0, 30.0, 40.0], [30.0, 40.0, 50.0]])
    az = np.array([[350.0, 10.0, 30.0]] * 3)
    angles = AngleGrid(0.0, 10000.0, 5000.0, zen, az, {"B02": zen}, {"B02": az})
    wr, wc = angles.weights(grid)
    values = metadata.interpolate_nodes(zen, wr, wc)
    # zen = 10 + 10 * (row + col) in node units: linear, so bilinear is exact; centre (0.25, 0.25) -> 15
    u = (np.arange(4) + 0.5) * 0.5
    np.testing.assert_allclose(values, 10 + 10 * (u[:, None] + u[None, :]))
    azi = metadata.interpolate_azimuth(az, wr, wc)
    assert azi[0, 0] == pytest.approx(355.0, abs=0.05)  # a quarter of the way from 350 to 10 (through 360)
    assert azi[0, 1] == pytest.approx(5.0, abs=0.05)
    const = AngleGrid.constant(grid, 30.0, 120.0, 4.0, 200.0)
    wr, wc = const.weights(grid, Window(1, 1, 2, 3))
    np.testing.assert_allclose(metadata.interpolate_nodes(const.sun_zenith, wr, wc), 30.0)


# ----------------------------------------------------------------------------- a SAFE with real metadata
def _write_band(path: Path, data: np.ndarray, res: float, origin=(499980.0, 5400000.0), epsg=32646) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path,
        "w",
        driver="JP2OpenJPEG",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype="uint16",
        crs=f"EPSG:{epsg}",
        transform=Affine(res, 0, origin[0], 0, -res, origin[1]),
        QUALITY=100,
        REVERSIBLE="YES",
    ) as dst:
        dst.write(data[None])


def band_dn(band: str, size10: int = 60) -> np.ndarray:
    """Known DN per band: a ramp for 10 m bands, constants for 20 and 60 m bands (resampling-invariant)."""
    res = NATIVE_RESOLUTION[band]
    n = size10 * 10 // res
    if res == 10:
        rows, cols = np.indices((n, n))
        return (1500 + 10 * rows + cols + 100 * S2_BANDS.index(band)).astype(np.uint16)
    return np.full((n, n), 2000 + 50 * S2_BANDS.index(band), dtype=np.uint16)


def build_safe(
    shared_fixtures: Path,
    root: Path,
    size10: int = 60,
    skip: tuple[str, ...] = (),
    name: str = L1C_0509,
    tl: str = TL_0509,
    shift_m: float = 0.0,
) -> Path:
    """A SAFE folder: real MTD_MSIL1C.xml and MTD_TL.xml, small JP2 bands ``shift_m`` inside the tile's corner."""
    src = _safe(shared_fixtures, name)
    safe = root / name
    (safe / tl).parent.mkdir(parents=True)
    shutil.copyfile(src / "MTD_MSIL1C.xml", safe / "MTD_MSIL1C.xml")
    shutil.copyfile(src / tl, safe / tl)
    meta = parse_product_metadata((src / "MTD_MSIL1C.xml").read_bytes())
    ulx, uly = parse_tile_metadata((src / tl).read_bytes()).origins[10]
    for band in S2_BANDS:
        if band in skip:
            continue
        res = NATIVE_RESOLUTION[band]
        _write_band(
            safe / (meta.image_files[(band, res)] + ".jp2"),
            band_dn(band, size10),
            res,
            origin=(ulx + shift_m, uly - shift_m),
        )
    return safe


def zip_safe(safe: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(safe.rglob("*")):
            zf.write(p, p.relative_to(safe.parent).as_posix())
    return target


@pytest.fixture(scope="module")
def safe_dir(shared_fixtures, tmp_path_factory) -> Path:
    return build_safe(shared_fixtures, tmp_path_factory.mktemp("safe"))


@pytest.mark.parametrize("as_zip", [False, True])
def test_safe_reader_end_to_end(safe_dir, tmp_path, as_zip):
    path = zip_safe(safe_dir, tmp_path / "product.zip") if as_zip else safe_dir
    product = open_l1c(path)
    assert product.kind == ("SAFE zip" if as_zip else "SAFE")
    assert product.product_id == "S2A_MSIL1C_20230216T044851_N0509_R076_T46UEU_20230216T063628"
    assert product.spacecraft == "S2A" and product.processing_baseline == "05.09"
    assert (product.grid.width, product.grid.height, product.resolution) == (60, 60, 10.0)
    assert product.grid.transform.c == 499980.0 and product.grid.crs.to_epsg() == 32646
    assert product.offsets["B04"] == -1000.0
    # the 600 m image sits between the first 2 x 2 angle nodes
    assert product.angles.shape == (2, 2)
    assert product.angles.sun_zenith[0, 0] == pytest.approx(62.9568)
    with BandReader(product.bands, product.grid) as reader:
        toa = read_toa(reader, product, ("B02", "B05", "B01"))
    np.testing.assert_allclose(toa[0], (band_dn("B02") - 1000.0) / 10000.0, atol=1e-7)  # native 10 m: exact
    np.testing.assert_allclose(toa[1], (2000 + 50 * 4 - 1000) / 10000.0, atol=1e-6)  # 20 m -> 10 m
    np.testing.assert_allclose(toa[2], (2000 - 1000) / 10000.0, atol=1e-6)  # 60 m -> 10 m


def test_safe_at_20_m_averages_the_10_m_bands(safe_dir):
    product = open_l1c(safe_dir, resolution=20)
    assert (product.grid.width, product.grid.height, product.resolution) == (30, 30, 20.0)
    with BandReader(product.bands, product.grid) as reader:
        dn = reader.read(("B03", "B11"), Window(0, 0, 30, 30))
    expected = band_dn("B03").reshape(30, 2, 30, 2).astype(np.float64).mean(axis=(1, 3))
    np.testing.assert_allclose(dn[0], expected, atol=1e-3)
    np.testing.assert_allclose(dn[1], 2000 + 50 * S2_BANDS.index("B11"))


def test_block_reads_match_a_whole_read(safe_dir):
    product = open_l1c(safe_dir)
    with BandReader(product.bands, product.grid) as reader:
        whole = reader.read(("B05", "B09"))
        parts = np.concatenate([reader.read(("B05", "B09"), w) for w in product.grid.row_blocks(7)], axis=1)
    np.testing.assert_array_equal(whole, parts)


def test_safe_with_a_missing_band_or_no_tile_metadata_fails_cleanly(shared_fixtures, tmp_path):
    safe = build_safe(shared_fixtures, tmp_path / "a", skip=("B11",))
    with pytest.raises(EotwinError, match="band files missing for B11"):
        open_l1c(safe)
    safe = build_safe(shared_fixtures, tmp_path / "b")
    (safe / TL_0509).unlink()
    with pytest.raises(EotwinError, match=r"MTD_TL\.xml"):
        open_l1c(safe)
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(EotwinError):
        open_l1c(bad_zip)


def test_l2a_safe_is_rejected_as_input_and_accepted_as_reference(shared_fixtures, tmp_path):
    src = _safe(shared_fixtures, L2A_0400)
    safe = tmp_path / L2A_0400
    safe.mkdir()
    shutil.copyfile(src / "MTD_MSIL2A.xml", safe / "MTD_MSIL2A.xml")
    meta = parse_product_metadata((src / "MTD_MSIL2A.xml").read_bytes())
    for (band, res), rel in meta.image_files.items():
        if band in ("B02", "SCL") and res in (10, 20):
            _write_band(safe / (rel + ".jp2"), np.full((12, 12), 1200, np.uint16), res, epsg=32633)
    with pytest.raises(EotwinError, match="needs Level-1C"):
        open_l1c(safe)
    ref = open_l2a_reference(safe, 10)
    assert ref.offsets["B02"] == -1000.0 and ref.quantification == 10000.0
    assert ref.bands["B02"].path.endswith("_B02_10m.jp2") and ref.bands["SCL"].path.endswith("_SCL_20m.jp2")


# ----------------------------------------------------------------------------- stacks
def _stack(path: Path, bands=S2_BANDS, dtype="uint16", tags=None, size=16) -> Path:
    tags = (
        {
            "RADIO_ADD_OFFSET": -1000,
            "SUN_ZENITH": 40,
            "SUN_AZIMUTH": 150,
            "VIEW_ZENITH": 5,
            "VIEW_AZIMUTH": 100,
            "SPACECRAFT": "Sentinel-2B",
        }
        if tags is None
        else tags
    )
    data = (np.arange(len(bands))[:, None, None] * 100 + 1500 + np.zeros((1, size, size))).astype(dtype)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=len(bands),
        dtype=dtype,
        crs="EPSG:32632",
        transform=Affine(10, 0, 300000, 0, -10, 5000000),
    ) as dst:
        dst.write(data)
        for i, b in enumerate(bands, start=1):
            dst.set_band_description(i, b)
        dst.update_tags(**{k: str(v) for k, v in tags.items()})
    return path


def test_stack_convention_is_read(tmp_path):
    order = ("B8A", *[b for b in S2_BANDS if b != "B8A"])  # any order: bands are found by description
    product = open_l1c(_stack(tmp_path / "s.tif", bands=order))
    assert product.kind == "stack" and product.spacecraft == "S2B"
    assert product.bands["B8A"].index == 1 and product.bands["B01"].index == 2
    assert product.angles.means() == pytest.approx(
        {"sun_zenith": 40, "sun_azimuth": 150, "view_zenith": 5, "view_azimuth": 100}
    )
    with BandReader(product.bands, product.grid) as reader:
        toa = read_toa(reader, product, ("B8A", "B01"))
    np.testing.assert_allclose(toa[:, 0, 0], [(1500 - 1000) / 1e4, (1600 - 1000) / 1e4], atol=1e-7)
    product20 = open_l1c(tmp_path / "s.tif", resolution=20)
    assert (product20.grid.width, product20.resolution) == (8, 20.0)


def test_stack_without_offset_tag_means_offset_zero(tmp_path):
    tags = {"SUN_ZENITH": 40, "SUN_AZIMUTH": 150, "VIEW_ZENITH": 5, "VIEW_AZIMUTH": 100, "SPACECRAFT": "S2A"}
    product = open_l1c(_stack(tmp_path / "s.tif", tags=tags))
    assert set(product.offsets.values()) == {0.0}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bands": tuple(b for b in S2_BANDS if b not in ("B05", "B12"))}, "lacks bands B05, B12"),
        ({"tags": {"SPACECRAFT": "Sentinel-2A"}}, "no angles"),
        (
            {"tags": {"SUN_ZENITH": 40, "SUN_AZIMUTH": 150, "VIEW_ZENITH": 5, "VIEW_AZIMUTH": 100}},
            "SPACECRAFT",
        ),
        ({"dtype": "float32"}, "integer DN"),
        (
            {
                "tags": {
                    "SUN_ZENITH": "high",
                    "SUN_AZIMUTH": 150,
                    "VIEW_ZENITH": 5,
                    "VIEW_AZIMUTH": 100,
                    "SPACECRAFT": "S2A",
                }
            },
            "not a number",
        ),
    ],
)
def test_bad_stacks_are_one_line_errors(tmp_path, kwargs, message):
    path = _stack(tmp_path / "s.tif", **kwargs)
    with pytest.raises(EotwinError, match=message) as info:
        open_l1c(path)
    assert "\n" not in str(info.value)


def test_corrupt_and_missing_inputs(tmp_path):
    corrupt = tmp_path / "c.tif"
    corrupt.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(EotwinError, match="not a readable raster"):
        open_l1c(corrupt)
    with pytest.raises(EotwinError, match="no such file"):
        open_l1c(tmp_path / "missing.tif")
    with pytest.raises(EotwinError, match="10 or 20"):
        open_l1c(corrupt, resolution=60)


def test_l2a_dn_convention_round_trips():
    boa = np.array([[[-0.05, 0.0, 0.1234, 0.9, np.nan]]], dtype=np.float32)
    dn = radiometry.boa_to_dn(boa)
    np.testing.assert_array_equal(dn[0, 0], [500, 1000, 2234, 10000, 0])
    back = radiometry.dn_to_boa(dn)
    np.testing.assert_allclose(back[0, 0, :4], [-0.05, 0.0, 0.1234, 0.9], atol=1e-6)
    assert np.isnan(back[0, 0, 4])
    assert radiometry.boa_to_dn(np.array([-0.5]))[0] == 1  # below the offset: clipped, not no-data
    tci = radiometry.reflectance_to_tci(np.array([[[0.0, 0.1, 0.3, np.nan]]] * 3))
    np.testing.assert_array_equal(tci[0, 0], [1, 128, 255, 0])
    assert tuple(b for b in S2_BANDS if b != "B10") == L2A_BANDS


# ----------------------------------------------------------------------------- a SAFE through the whole run
def test_safe_run_uses_per_pixel_angles_and_the_products_offset(shared_fixtures, tmp_path):
    """Baseline 03.01 (no offset), 1.2 km inside tile T46RER: every pixel is inverted with its own sun and
    per-band viewing angles, interpolated from the 5 km grids; checked against a per-pixel 6S-table lookup."""
    import os

    from eotwin.atmocorr import physics
    from eotwin.atmocorr.lut import DEFAULT_LUT_PATH, load_lut
    from eotwin.atmocorr.pipeline import make_options, run_correction

    lut_path = Path(os.environ.get("EOTWIN_ATMOCORR_LUT", DEFAULT_LUT_PATH))
    safe = build_safe(shared_fixtures, tmp_path, size10=120, name=L1C_0301, tl=TL_0301, shift_m=7000.0)
    product = open_l1c(safe)
    assert set(product.offsets.values()) == {0.0}
    result = run_correction(
        make_options(
            input=zip_safe(safe, tmp_path / "p.zip"),
            output=tmp_path / "out",
            method="6s-ddv",
            aot=0.15,
            wv=1.5,
            ozone=0.33,
            lut=lut_path,
        )
    )
    assert result.product.kind == "SAFE zip"
    with rasterio.open(result.files["l2a"]) as ds:
        boa = radiometry.dn_to_boa(ds.read())
        assert ds.transform.c == 499980.0 + 7000.0
    tile = parse_tile_metadata((safe / TL_0301).read_bytes())
    angles = tile.angles
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 120, 40), rng.integers(0, 120, 40)
    x = product.grid.transform.c + (cols + 0.5) * 10.0
    y = product.grid.transform.f - (rows + 0.5) * 10.0
    u, v = (x - angles.x0) / angles.step, (angles.y0 - y) / angles.step

    def at(grid_values: np.ndarray, azimuth: bool = False) -> np.ndarray:
        i, j = np.floor(v).astype(int), np.floor(u).astype(int)
        fv, fu = v - i, u - j
        vals = np.radians(grid_values) if azimuth else grid_values
        parts = [np.sin(vals), np.cos(vals)] if azimuth else [vals]
        out = [
            (1 - fv) * (1 - fu) * p[i, j]
            + (1 - fv) * fu * p[i, j + 1]
            + fv * (1 - fu) * p[i + 1, j]
            + fv * fu * p[i + 1, j + 1]
            for p in parts
        ]
        return np.degrees(np.arctan2(out[0], out[1])) if azimuth else out[0]

    lut = load_lut(lut_path)
    sza, saa = at(angles.sun_zenith), at(angles.sun_azimuth, True)
    assert angles.sun_zenith.min() < sza.min() < sza.max() < angles.sun_zenith.max()
    for band in ("B02", "B05", "B8A", "B12"):
        vza, vaa = at(angles.view_zenith[band]), at(angles.view_azimuth[band], True)
        terms = lut.terms_for(
            "S2A", (band,), "continental", 0.15, sza, vza, physics.relative_azimuth(saa, vaa), 1.5, 0.33
        )
        toa = band_dn(band, 120)
        res = NATIVE_RESOLUTION[band]
        toa_px = toa[rows * 10 // res, cols * 10 // res] / 10000.0
        expected = physics.invert(toa_px[None], terms)[0]
        np.testing.assert_allclose(boa[L2A_BANDS.index(band), rows, cols], expected, atol=2e-4)
