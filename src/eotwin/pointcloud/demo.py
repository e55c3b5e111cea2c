"""The point-cloud step of ``eotwin demo``: cloud, viewer, preview, summary and mesh of the sample scene."""

from __future__ import annotations

from eotwin.io.files import write_json_atomic
from eotwin.report.demo import Artifact, DemoContext


def pointcloud_demo(context: DemoContext) -> list[Artifact]:
    from eotwin.pointcloud.info import cloud_info
    from eotwin.pointcloud.mesh_pipeline import build_mesh
    from eotwin.pointcloud.pipeline import build_point_cloud, make_options

    out = context.step_dir("pointcloud")
    sample = context.sample
    options = make_options(dem=str(sample.dem), image=(str(sample.l2a),), output=out / "valley.laz", mask=str(sample.scl))
    result = build_point_cloud(options, progress=context.progress)
    # the same cloud as COPC: the octree that QGIS, PDAL and streaming viewers read level of detail first
    copc = build_point_cloud(options.model_copy(update={"output": out / "valley.copc.laz", "viewer": False,
                                                        "preview": False}), progress=context.progress)
    summary = write_json_atomic(out / "valley.info.json", cloud_info(result.output))
    mesh = build_mesh(str(sample.dem), (str(sample.tci),), out / "valley_mesh.ply", resolution=20.0, target_triangles=100_000,
                      progress=context.progress)
    rel = context.output_dir
    artifacts = [
        Artifact("3D viewer (offline WebGL)", result.viewer.relative_to(rel), "viewer",
                 f"{result.count:,} points; drag to orbit, wheel to zoom"),
        Artifact("Oblique preview", result.preview.relative_to(rel), "image", "headless render with eye-dome lighting"),
        Artifact("Point cloud (LAZ 1.4, format 7)", result.output.relative_to(rel), "data",
                 "L2A B04/B03/B02 colour, SCL cloud/shadow masked, DEM bilinear from EPSG:4326 onto UTM 32N"),
        Artifact("Point cloud (COPC 1.0)", copc.output.relative_to(rel), "data",
                 f"the same {copc.count:,} points in an octree (LAZ chunks per node): opens in QGIS, PDAL, streaming viewers"),
        Artifact("Streaming viewer (COPC by HTTP range requests)", copc.output.relative_to(rel), "viewer",
                 f"run: eotwin pointcloud serve {copc.output} (a local server on 127.0.0.1; level of detail first)"),
        Artifact("STAC item", result.metadata.relative_to(rel), "metadata", "bbox, CRS, count, sources and parameters"),
        Artifact("pointcloud info", summary.relative_to(rel), "metrics", "count, bounds, CRS, colour range"),
        Artifact("Terrain mesh (PLY)", mesh.ply.relative_to(rel), "data", f"{mesh.triangles:,} triangles at 20 m, simplified"),
    ]
    if mesh.glb:
        artifacts.append(Artifact("Terrain mesh (glTF binary)", mesh.glb.relative_to(rel), "data", "opens in any glTF viewer"))
    return artifacts
