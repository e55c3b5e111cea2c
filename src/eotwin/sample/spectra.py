"""Typical surface reflectance of the sample's land covers in the 13 Sentinel-2 bands.

Values are rounded from typical library spectra (water, conifer forest, meadow, bare rock, fresh
snow) sampled at the Sentinel-2 centre wavelengths; they are plausible, not measured.
"""

from __future__ import annotations

import numpy as np

# land-cover classes of the sample, in the order of ``LAND_COVER_NAMES``
WATER, FOREST, GRASS, ROCK, SNOW = range(5)
LAND_COVER_NAMES: tuple[str, ...] = ("water", "forest", "grass", "rock", "snow")

#                         B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09   B10   B11   B12
# one column per band of eotwin.sentinel2.bands.S2_BANDS (ESA order, the 13 L1C bands)
CLASS_SPECTRA = np.array(
    [
        [0.050, 0.045, 0.040, 0.022, 0.016, 0.011, 0.010, 0.008, 0.007, 0.005, 0.002, 0.003, 0.002],  # water
        [0.020, 0.024, 0.045, 0.024, 0.080, 0.220, 0.270, 0.300, 0.310, 0.300, 0.020, 0.140, 0.065],  # forest
        [0.030, 0.040, 0.085, 0.050, 0.125, 0.300, 0.360, 0.400, 0.410, 0.400, 0.030, 0.250, 0.130],  # grass
        [0.100, 0.120, 0.150, 0.170, 0.190, 0.210, 0.220, 0.230, 0.240, 0.240, 0.050, 0.280, 0.240],  # rock
        [0.850, 0.880, 0.870, 0.850, 0.830, 0.800, 0.780, 0.750, 0.720, 0.650, 0.100, 0.080, 0.060],  # snow
    ],
    dtype=np.float32,
)

# Scene classification (SCL) code that an L2A processor would give each class
CLASS_TO_SCL = np.array([6, 4, 4, 5, 11], dtype=np.uint8)
