"""The LUT data model: storage round trip, exact multilinear interpolation, one-line errors, the committed table."""

from __future__ import annotations

import numpy as np
import pytest

from eotwin.atmocorr.lut import DEFAULT_LUT_PATH, LOG_TERMS, TERMS, SixSLut, load_lut
from eotwin.errors import EotwinError

AXES = {
    "aot": [0.0, 0.1, 0.4],
    "sza": [0.0, 40.0, 70.0],
    "vza": [0.0, 12.0],
    "raa": [0.0, 90.0, 180.0],
    "wv": [0.5, 2.0, 4.0],
    "o3": [0.25, 0.35],
    "am": [2.0, 3.0, 5.0],
}
SENSORS = ("S2A", "S2B", "S2C")
BANDS = ("B02", "B04")
AEROSOLS = ("continental", "maritime")


def _coordinate(axis: str, values: np.ndarray, term: str = "") -> np.ndarray:
    """The coordinate the LUT interpolates in (see lut._TRANSFORMS; the path's view zenith is sin)."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "sza": 1 / np.cos(np.radians(v)),
        "vza": np.sin(np.radians(v)) if term == "path_ref" else 1 / np.cos(np.radians(v)),
        "raa": -np.cos(np.radians(v)),
        "wv": np.sqrt(v),
    }.get(axis, v)


def _linear_term(dims: tuple[str, ...], coeffs: dict[str, float], base: float, term: str = "") -> np.ndarray:
    """A term that is a sum of linear functions of each (transformed) axis: interpolation must be exact.

    Transmittances are interpolated in log space, so theirs is the exponential of such a sum.
    """
    sizes = {"sensor": len(SENSORS), "band": len(BANDS), "aerosol": len(AEROSOLS)}
    grids = []
    for d in dims:
        if d in sizes:
            grids.append(np.arange(sizes[d], dtype=np.float64) * 0.01)
        else:
            grids.append(coeffs[d] * _coordinate(d, np.array(AXES[d]), term))
    mesh = np.meshgrid(*grids, indexing="ij")
    if term in LOG_TERMS:
        return np.exp(np.log(base) + sum(mesh)).astype(np.float32)
    return (base + sum(mesh)).astype(np.float32)


COEFFS = {"aot": 0.05, "sza": 0.01, "vza": 0.02, "raa": 0.003, "wv": -0.01, "o3": -0.02, "am": -0.004}
BASES = {
    "path_ref": 0.05,
    "t_down": 0.8,
    "t_up": 0.85,
    "s_alb": 0.1,
    "tg": 0.9,
    "q_rayleigh": 1.0,
    "q_aerosol": 1.0,
}


@pytest.fixture
def synthetic_lut() -> SixSLut:
    terms = {name: _linear_term(dims, COEFFS, BASES[name], name) for name, dims in TERMS.items()}
    # the gas factors must be exactly 1 at the reference amounts: make them depend on nothing
    terms["q_rayleigh"][:] = 1.0
    terms["q_aerosol"][:] = 1.0
    return SixSLut(
        SENSORS,
        BANDS,
        AEROSOLS,
        {k: np.array(v) for k, v in AXES.items()},
        terms,
        2.0,
        0.35,
        {"note": "test"},
    )


def test_interpolation_is_exact_for_functions_linear_in_the_axis_coordinates(synthetic_lut):
    rng = np.random.default_rng(3)
    n = 200
    q = {
        "aot": rng.uniform(0, 0.4, n),
        "sza": rng.uniform(0, 60, n),
        "vza": rng.uniform(0, 12, n),
        "raa": rng.uniform(-350, 350, n),  # folded to [0, 180]
        "wv": rng.uniform(0.5, 4, n),
        "o3": rng.uniform(0.25, 0.35, n),
    }
    terms = synthetic_lut.terms_for("Sentinel-2B", ["B04", "B02"], "maritime", **q)
    assert terms.path.shape == (2, n)
    sensor, band_b04, aerosol = 1 * 0.01, 1 * 0.01, 1 * 0.01
    folded = np.abs(np.mod(q["raa"], 360))
    folded = np.where(folded > 180, 360 - folded, folded)
    am = 1 / np.cos(np.radians(q["sza"])) + 1 / np.cos(np.radians(q["vza"]))
    expected_path = (
        BASES["path_ref"]
        + sensor
        + band_b04
        + aerosol
        + COEFFS["aot"] * q["aot"]
        + COEFFS["sza"] * _coordinate("sza", q["sza"])
        + COEFFS["vza"] * _coordinate("vza", q["vza"], "path_ref")
        + COEFFS["raa"] * _coordinate("raa", folded)
    )
    np.testing.assert_allclose(terms.path[0], expected_path, atol=2e-6)
    expected_tg = np.exp(
        np.log(BASES["tg"])
        + sensor
        + band_b04
        + COEFFS["wv"] * np.sqrt(q["wv"])
        + COEFFS["o3"] * q["o3"]
        + COEFFS["am"] * am
    )
    np.testing.assert_allclose(terms.tg[0], expected_tg, atol=2e-6)
    expected_down = np.exp(
        np.log(BASES["t_down"])
        + sensor
        + aerosol
        + COEFFS["aot"] * q["aot"]
        + COEFFS["sza"] * _coordinate("sza", q["sza"])
    )
    np.testing.assert_allclose(terms.t_down[1], expected_down, atol=2e-6)  # B02 is band index 0 -> +0
    expected_salb = BASES["s_alb"] + sensor + band_b04 + aerosol + COEFFS["aot"] * q["aot"]
    np.testing.assert_allclose(terms.s_alb[0], expected_salb, atol=2e-6)


def test_nodes_return_table_values_and_shapes_broadcast(synthetic_lut):
    aot = np.array([[0.0, 0.1], [0.4, 0.1]])
    t = synthetic_lut.terms_for("S2A", "B02", "continental", aot, 40.0, 12.0, 90.0, 2.0, 0.35)
    assert t.path.shape == (1, 2, 2) and t.path.dtype == np.float32
    table = synthetic_lut.terms["path_ref"][0, 0, 0]
    np.testing.assert_allclose(t.path[0], table[[[0, 1], [2, 1]], 1, 1, 1], rtol=1e-6)


def test_out_of_range_is_a_one_line_error_unless_clamped(synthetic_lut):
    with pytest.raises(EotwinError, match=r"aot = 0.9 is outside the 6S LUT range \[0, 0.4\]"):
        synthetic_lut.terms_for("S2A", "B02", "continental", 0.9, 40.0, 5.0, 90.0, 2.0, 0.3)
    clamped = synthetic_lut.terms_for("S2A", "B02", "continental", 0.9, 40.0, 5.0, 90.0, 2.0, 0.3, clamp=True)
    edge = synthetic_lut.terms_for("S2A", "B02", "continental", 0.4, 40.0, 5.0, 90.0, 2.0, 0.3)
    np.testing.assert_array_equal(clamped.path, edge.path)
    with pytest.raises(EotwinError, match="unknown Sentinel-2 band"):
        synthetic_lut.terms_for("S2A", "B13", "continental", 0.1, 40.0, 5.0, 90.0, 2.0, 0.3)
    with pytest.raises(EotwinError, match="is not in the 6S LUT"):
        synthetic_lut.terms_for("S2A", "B03", "continental", 0.1, 40.0, 5.0, 90.0, 2.0, 0.3)
    with pytest.raises(EotwinError, match="aerosol 'urban' is not in the 6S LUT"):
        synthetic_lut.terms_for("S2A", "B02", "urban", 0.1, 40.0, 5.0, 90.0, 2.0, 0.3)


def test_save_load_round_trip_and_bad_files(synthetic_lut, tmp_path):
    path = synthetic_lut.save(tmp_path / "lut.npz")
    loaded = SixSLut.load(path)
    assert loaded.bands == BANDS and loaded.aerosols == AEROSOLS and loaded.metadata == {"note": "test"}
    for name in TERMS:
        np.testing.assert_array_equal(loaded.terms[name], synthetic_lut.terms[name])
    assert [p.name for p in tmp_path.iterdir()] == ["lut.npz"]  # no temporary left behind
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(EotwinError, match="cannot read 6S LUT"):
        SixSLut.load(bad)
    with pytest.raises(EotwinError, match="6S LUT not found"):
        load_lut(tmp_path / "missing.npz")


def test_wrong_shapes_are_rejected(synthetic_lut):
    terms = dict(synthetic_lut.terms)
    terms["tg"] = terms["tg"][:, :, :2]
    with pytest.raises(EotwinError, match="LUT term tg has shape"):
        SixSLut(SENSORS, BANDS, AEROSOLS, synthetic_lut.axes, terms, 2.0, 0.35)


def test_committed_table_is_compact_complete_and_physical():
    assert DEFAULT_LUT_PATH.stat().st_size < 3 * 1024 * 1024
    lut = load_lut()
    assert lut.sensors == ("S2A", "S2B", "S2C") and len(lut.bands) == 13
    assert set(lut.aerosols) == {"continental", "maritime"}
    assert lut.axes["aot"].size >= 7 and lut.axes["aot"][-1] >= 0.8
    assert "S2C<-S2B" in lut.metadata["srf_source"] and lut.metadata["run_time_s"] > 0
    np.testing.assert_array_equal(lut.terms["path_ref"][2], lut.terms["path_ref"][1])  # S2C = S2B, documented
    for name, arr in lut.terms.items():
        assert np.all(np.isfinite(arr)), name
    assert np.all((lut.terms["tg"] > 0) & (lut.terms["tg"] <= 1.0))
    for name in ("t_down", "t_up"):
        assert np.all((lut.terms[name] > 0.05) & (lut.terms[name] <= 1.0)), name
    assert np.all((lut.terms["s_alb"] >= 0) & (lut.terms["s_alb"] < 0.5))
    assert np.all(lut.terms["path_ref"] >= 0)
    # more aerosol, brighter path (blue band, continental, any geometry)
    b02 = lut.terms["path_ref"][0, lut.bands.index("B02"), 0]
    assert np.all(np.diff(b02, axis=0) > 0)
    # water vapour absorbs in B09: transmittance falls as water vapour grows
    tg09 = lut.terms["tg"][0, lut.bands.index("B09")]
    assert np.all(np.diff(tg09, axis=0) < 0)
