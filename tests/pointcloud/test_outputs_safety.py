"""A failed build never costs the user a previous good output or one of the inputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from eotwin.errors import EotwinError
from eotwin.io.raster import grid_of, open_raster, write_geotiff
from eotwin.pointcloud.pipeline import build_point_cloud, make_options


def test_a_build_with_zero_points_keeps_the_previous_output(sample_files, tmp_path):
    out = tmp_path / "cloud.laz"
    build_point_cloud(make_options(dem=str(sample_files.dem), image=(str(sample_files.tci),), output=out,
                                   viewer=False, preview=False))
    before = out.read_bytes()
    with open_raster(sample_files.dem) as src:
        data, grid = src.read(1), grid_of(src)
    nodata = -9999.0
    empty_dem = tmp_path / "empty_dem.tif"
    write_geotiff(empty_dem, np.full_like(data, nodata, dtype="float32")[None], grid, nodata=nodata)
    with pytest.raises(EotwinError, match="no valid pixels"):
        build_point_cloud(make_options(dem=str(empty_dem), image=(str(sample_files.tci),), output=out,
                                       viewer=False, preview=False))
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.laz", "cloud.laz.json", "empty_dem.tif"]


@pytest.mark.parametrize("which", ["dem", "image", "png-beside"])
def test_output_equal_to_an_input_is_refused(sample_files, tmp_path, which):
    dem = tmp_path / "dem.tif"
    tci = tmp_path / "tci.tif"
    shutil.copyfile(sample_files.dem, dem)
    shutil.copyfile(sample_files.tci, tci)
    originals = {p: p.read_bytes() for p in (dem, tci)}
    if which == "png-beside":  # the preview would land on the image: image.png and -o image.laz
        png = tmp_path / "image.png"
        shutil.copyfile(sample_files.tci, png)
        originals[png] = png.read_bytes()
        output, image = tmp_path / "image.laz", png
    else:
        output, image = (dem if which == "dem" else tci), tci
    with pytest.raises(EotwinError, match="is one of the inputs"):
        build_point_cloud(make_options(dem=str(dem), image=(str(image),), output=output, format="laz"))
    assert all(path.read_bytes() == data for path, data in originals.items())
