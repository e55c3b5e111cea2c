"""eotwin: Destination Earth Earth-observation workflows (point clouds, atmospheric correction, BigEarthNet, DeltaTwin)."""

__version__ = "0.1.0"
