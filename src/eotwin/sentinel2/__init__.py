"""Sentinel-2 itself: bands, radiometry, metadata, products (SAFE, GeoTIFF stacks) and their reading.

The one place that knows the sensor: ``bands`` (the band table), ``radiometry`` (quantification and offsets,
DN <-> reflectance), ``metadata`` (MTD XML, angle grids), ``safe`` and ``products`` (opening a product),
``reading`` (bands onto a grid, block by block), ``ecmwf`` (the ozone column of the auxiliary data).
"""
