"""Atmospheric correction of Sentinel-2 L1C, grounded in 6S.

Physics: ``srf`` (spectral responses), ``sixs`` (one real 6S run), ``lut`` (the committed 6S table and
its interpolation), ``physics`` (the TOA <-> BOA formula, written once, and the atmosphere/geometry
value objects), ``terrain`` (altitude and slopes). Retrievals: ``water_vapour`` (B09/B8A),
``dark_vegetation`` (sen2cor's DDV aerosol), ``dark_object`` (Chavez's DOS and its 6S reading),
``retrieval`` (what they share), ``aotmap`` (an AOT map from the DDV). The run: ``pipeline`` (options,
blocks, outputs), ``correctors`` (the methods), ``ai`` (the network), ``evaluation`` (metrics,
reference products, held-out scenes).
"""
