"""``atmocorr sample-l1c`` writes its stack a block of rows at a time: the same pixels as the in-memory scene."""

from __future__ import annotations

import numpy as np
import rasterio

from eotwin.atmocorr.sample_l1c import make_sample_l1c, write_sample_l1c


def test_streamed_sample_l1c_equals_the_in_memory_one(tmp_path):
    options = dict(size=260, seed=9, atmosphere={"aot": 0.3, "aerosol": "maritime"}, geometry={"sun_zenith": 40.0})
    whole = make_sample_l1c(tmp_path / "whole", **options)
    l1c, truth = write_sample_l1c(tmp_path / "streamed", block_rows=96, **options)
    for a, b in ((whole.l1c, l1c), (whole.truth, truth)):
        with rasterio.open(a) as x, rasterio.open(b) as y:
            assert np.array_equal(x.read(), y.read())
            assert x.tags() == y.tags() and x.descriptions == y.descriptions and x.profile == y.profile
