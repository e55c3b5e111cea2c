"""Figures need no display: every plot goes through the Agg backend, even where a GUI backend was asked for."""

from __future__ import annotations

import subprocess
import sys


def test_pyplot_uses_agg_whatever_the_environment_asks_for():
    code = ("from eotwin.report.plotting import pyplot; import matplotlib; plt = pyplot(); "
            "fig, ax = plt.subplots(); ax.plot([0, 1]); print(matplotlib.get_backend())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={"MPLBACKEND": "TkAgg", "PATH": "/usr/bin:/bin"})
    assert proc.stdout.strip().lower() == "agg"
