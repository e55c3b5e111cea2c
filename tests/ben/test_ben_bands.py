import numpy as np
import pytest

from eotwin.ben.bands import (
    ALL_BANDS,
    NATIVE_SIZE,
    S1_BANDS,
    S2_BANDS,
    band_stats,
    normalise,
    resample,
    resolve_bands,
    stack_bands,
)
from eotwin.errors import EotwinError


def test_band_sets_and_lists():
    assert resolve_bands("s2") == S2_BANDS and len(S2_BANDS) == 12 and "B10" not in S2_BANDS
    assert resolve_bands("s1") == S1_BANDS == ("VV", "VH")
    assert resolve_bands("all") == ALL_BANDS == S1_BANDS + S2_BANDS and len(ALL_BANDS) == 14  # ConfigILM 'ALL'
    assert resolve_bands("s1-s2-10") == ("VV", "VH", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert resolve_bands("vh,B02") == ("VH", "B02") and NATIVE_SIZE["VV"] == NATIVE_SIZE["VH"] == 120
    assert resolve_bands("s2-10") == ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
    assert resolve_bands("RGB") == ("B04", "B03", "B02")
    assert resolve_bands("b8a, B2,B11") == ("B8A", "B02", "B11")
    assert resolve_bands(["B12", "B01"]) == ("B12", "B01")
    for bad in ("B10", "B02,B02", "", "nir"):
        with pytest.raises(EotwinError):
            resolve_bands(bad)
    assert {NATIVE_SIZE[b] for b in ("B02", "B03", "B04", "B08")} == {120}
    assert NATIVE_SIZE["B8A"] == 60 and NATIVE_SIZE["B09"] == 20


def test_nearest_replicates_pixels():
    band = np.arange(400, dtype=np.uint16).reshape(20, 20)
    out = resample(band, 120, "nearest")
    assert out.dtype == np.float32 and out.shape == (120, 120)
    np.testing.assert_array_equal(out, np.kron(band, np.ones((6, 6))).astype(np.float32))
    native = np.ones((120, 120), np.uint16)
    assert resample(native).shape == (120, 120)


def test_bilinear_aligned_corners_reproduces_planes_exactly():
    rows, cols = np.mgrid[0:60, 0:60].astype(np.float64)
    plane = 3.0 * rows + 5.0 * cols + 7.0
    out = resample(plane, 120, "bilinear")
    r, c = np.mgrid[0:120, 0:120] * (59 / 119)
    np.testing.assert_allclose(out, 3.0 * r + 5.0 * c + 7.0, rtol=0, atol=1e-3)
    assert out[0, 0] == plane[0, 0] and out[-1, -1] == plane[-1, -1]


def test_bilinear_matches_torch_interpolate_align_corners():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    band = rng.integers(0, 10000, size=(20, 20)).astype(np.uint16)
    expected = torch.nn.functional.interpolate(torch.from_numpy(band.astype(np.float32))[None, None], size=(120, 120),
                                               mode="bilinear", align_corners=True)[0, 0].numpy()
    np.testing.assert_allclose(resample(band, 120, "bilinear"), expected, rtol=1e-6, atol=1e-2)
    expected_nearest = torch.nn.functional.interpolate(torch.from_numpy(band.astype(np.float32))[None, None],
                                                       size=(120, 120), mode="nearest")[0, 0].numpy()
    np.testing.assert_array_equal(resample(band, 120, "nearest"), expected_nearest)


def test_normalise_uses_published_statistics():
    mean, std = band_stats(("B02", "B8A"), "nearest")
    np.testing.assert_allclose(mean, [438.3720703125, 2235.556640625])
    np.testing.assert_allclose(std, [607.02685546875, 1356.5440673828125])
    _, std_bilinear = band_stats(("B8A",), "bilinear")
    assert std_bilinear[0] < std[1]  # bilinear smoothing lowers the spread of 20 m bands
    arrays = {"B02": np.full((120, 120), 438.3720703125 + 607.02685546875, np.float64),
              "B8A": np.full((60, 60), 2235.556640625, np.float64)}
    stack = normalise(stack_bands(arrays, ("B02", "B8A")), ("B02", "B8A"))
    np.testing.assert_allclose(stack[0], 1.0, atol=1e-6)
    np.testing.assert_allclose(stack[1], 0.0, atol=1e-6)
    with pytest.raises(EotwinError, match="lacks band"):
        stack_bands(arrays, ("B03",))


def test_statistics_are_configilm_s_published_ones(ben_mock_dir):
    """Every mean / std (S1 and S2, both resampling modes) equals the configilm 0.7.1 wheel's BENv2_utils.py,
    read as text from the wheel (configilm itself is never imported)."""
    import ast
    import zipfile

    wheel = ben_mock_dir.parent / "wheels" / "configilm-0.7.1-py3-none-any.whl"
    if not wheel.is_file():
        pytest.fail(f"{wheel} is missing: run `make setup`")
    with zipfile.ZipFile(wheel) as archive:
        tree = ast.parse(archive.read("configilm/extra/BENv2_utils.py").decode())
    published = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                 and node.targets[0].id in ("means", "stds")}
    for mode in ("nearest", "bilinear"):
        mean, std = band_stats(ALL_BANDS, mode)
        assert mean.tolist() == [np.float32(published["means"][f"120_{mode}"][b]) for b in ALL_BANDS]
        assert std.tolist() == [np.float32(published["stds"][f"120_{mode}"][b]) for b in ALL_BANDS]
    mean, std = band_stats(S1_BANDS)
    np.testing.assert_allclose(mean, [-12.6439, -19.3526], atol=1e-4)  # dB
    vv = np.full((120, 120), mean[0] + std[0], np.float32)
    np.testing.assert_allclose(normalise(vv[None], ("VV",)), 1.0, atol=1e-6)
