"""BigEarthNet: readers for v2 / v1 / LMDB, the training store, label analysis and the dataset core.

Class order, band sets, resampling and normalisation are explicit (see ``labels`` and ``bands``).
"""
