"""matplotlib set up once: figures go to files, never to a screen (the Agg backend, chosen before pyplot)."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` with the Agg backend: no display is needed (containers, CI, spawned demo steps)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
