"""Loopback servers that speak the real protocols (STAC API, S3, Zarr over HTTP), for tests and benchmarks."""
