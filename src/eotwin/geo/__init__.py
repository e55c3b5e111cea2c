"""Shared geometry: grids, pixel centres, windows, CRS and UTM-zone logic. Pure, no I/O."""

from eotwin.geo.grid import Grid

__all__ = ["Grid"]
