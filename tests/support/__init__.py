"""Test support (not shipped): loopback servers speaking the real protocols (STAC API, S3, Zarr over HTTP), a live-data world, memory limits; for tests and benchmarks."""
