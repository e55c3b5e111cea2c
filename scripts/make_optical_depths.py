"""Write src/eotwin/atmocorr/data/optical_depths.json: 6S's Rayleigh and aerosol optical depths per S2 band.

The terrain correction needs the direct share of the sun's beam, ``exp(-tau / cos(sza))``, which the
6S table does not hold (its transmittances are direct + diffuse). 6S reports the optical depths of
each run; this script asks it once per sensor, band and aerosol model (AOT 1 at 550 nm), with the
same spectral responses as the table (about 80 runs, half a minute).

Usage: ``.venv/bin/python scripts/make_optical_depths.py [-o PATH]``
"""

from __future__ import annotations

import argparse

from eotwin.atmocorr.lut import load_lut
from eotwin.atmocorr.sixs import AEROSOL_MODELS, optical_depths
from eotwin.atmocorr.terrain import OPTICAL_DEPTHS_PATH
from eotwin.io.files import write_json_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(OPTICAL_DEPTHS_PATH))
    args = parser.parse_args()
    lut = load_lut()
    rayleigh: dict[str, dict[str, float]] = {}
    aerosol: dict[str, dict[str, dict[str, float]]] = {}
    for sensor in lut.sensors:
        rayleigh[sensor], aerosol[sensor] = {}, {m: {} for m in AEROSOL_MODELS}
        for band in lut.bands:
            for model in AEROSOL_MODELS:
                ray, aer = optical_depths(sensor, band, model)
                rayleigh[sensor][band] = round(ray, 6)
                aerosol[sensor][model][band] = round(aer, 6)
    payload = {
        "source": f"6S ({lut.metadata.get('sixs', '6S')}) optical_depth_total at AOT(550) 1, sea level; "
        "scripts/make_optical_depths.py",
        "rayleigh": rayleigh,
        "aerosol_per_aot": aerosol,
    }
    write_json_atomic(args.output, payload)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
