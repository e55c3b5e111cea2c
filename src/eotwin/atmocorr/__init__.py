"""Atmospheric correction of Sentinel-2 L1C, grounded in 6S.

Physics layer (this part): ``srf`` (spectral responses), ``sixs`` (one real 6S run), ``lut`` (the
committed 6S table and its interpolation), ``physics`` (pure TOA <-> BOA algebra) and
``baselines`` (dark object subtraction, DDV aerosol retrieval + 6S inversion).
"""
