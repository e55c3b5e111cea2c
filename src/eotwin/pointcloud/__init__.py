"""EO point clouds: pure point building from aligned raster blocks, the streaming pipeline, viewers, meshes."""
