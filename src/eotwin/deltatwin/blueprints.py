"""The eotwin components as blueprints: each one's inputs, outputs, models, edges and the commands it needs.

A component is described once, as a :class:`Blueprint`; ``build`` turns it into a component folder. A
blueprint is only offered when the eotwin commands and options it runs are in the registry of the
commands' option models (:mod:`eotwin.commands`, the models the CLI builds), so adding a pipeline's
component is one blueprint here.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eotwin.errors import EotwinError


@dataclass(frozen=True)
class ModelBlueprint:
    """One model: its positional arguments (model inputs, in order), its outputs, and its shell body."""

    id: str
    extras: tuple[str, ...]  # eotwin extras whose dependencies the model needs (pinned in requirements.txt)
    args: dict[str, str]  # model input -> type, in the order run.sh receives them
    outputs: dict[str, str]  # model output -> glob (Data)
    body: str  # bash after the prelude; "$1".. are the args; eotwin is `python -m eotwin`
    cpu: str = "1000m"
    environment: dict[str, str] = field(default_factory=dict)
    apt: dict[str, str] = field(default_factory=dict)  # Debian package -> version (the image is Debian 12)


@dataclass(frozen=True)
class Blueprint:
    """A component. Node ids: inputs, outputs, models and dependencies by their names (kept distinct)."""

    name: str
    summary: str
    description: str
    inputs: dict[str, dict[str, Any]]  # name -> {type, description, value?}
    outputs: dict[str, str]  # name -> description (all Data)
    edges: tuple[tuple[str, str | None, str, str | None], ...]  # (from id, port, to id, port)
    models: tuple[ModelBlueprint, ...] = ()
    dependencies: dict[str, str] = field(default_factory=dict)  # node id -> component name
    requires: tuple[tuple[str, ...], ...] = ()  # eotwin commands used, with the options they must have
    example: dict[str, dict[str, Any]] = field(default_factory=dict)  # inputs_file.json
    usage: str = ""  # README: how to run it
    sample_inputs: Callable[[dict[str, Path]], dict[str, dict[str, Any]]] | None = None  # for --measure / tests
    # what sample_inputs needs beyond the sample scene's files: "l1c" (the sample L1C stack), "checkpoint" (a
    # one-epoch smoke training); --measure makes them only for the components that ask
    sample_extras: tuple[str, ...] = ()




def _pointcloud_files() -> Blueprint:
    model = ModelBlueprint(
        id="pointcloud",
        extras=("pointcloud",),
        args={"dem": "Data", "image": "Data", "sampled_fraction": "number", "seed": "integer", "format": "string"},
        outputs={"point_cloud": "point_cloud.$(inputs.format)", "metadata": "point_cloud.$(inputs.format).json"},
        body=textwrap.dedent("""\
            dem=$1 image=$2 fraction=$3 seed=$4 format=$5
            python -m eotwin pointcloud build --dem "$dem" --image "$image" --sampled-fraction "$fraction" \\
                --seed "$seed" --format "$format" --output "point_cloud.$format" --no-viewer --no-preview
            """),
        cpu="1000m",
    )
    return Blueprint(
        name="eotwin-pointcloud-files",
        summary="Coloured point cloud (X, Y, Z, RGB) from a DEM file and a Sentinel-2 colour image.",
        description=("Turns a DEM raster and a Sentinel-2 colour raster (RGB/TCI or multi-band L2A) into a "
                     "georeferenced point cloud: one point per valid pixel centre of the image grid, heights "
                     "from the DEM warped onto it, colours stretched to 8 bits, optionally sampled (exactly "
                     "round(fraction x valid) points, reproducible with the seed). Writes LAS 1.4 / LAZ / PLY "
                     "plus STAC-like metadata. Runs `eotwin pointcloud build`."),
        inputs={
            "dem": {"type": "Data", "description": "DEM raster (GeoTIFF or any GDAL-readable file), metres."},
            "image": {"type": "Data", "description": "Colour raster: RGB/TCI or multi-band L2A (B04, B03, B02)."},
            "sampled_fraction": {"type": "number", "value": 1.0,
                                 "description": "Fraction of valid pixels kept, in (0, 1]."},
            "seed": {"type": "integer", "value": 0, "description": "Seed of the sampling (same seed, same points)."},
            "format": {"type": "string", "value": "laz", "description": "Output format: laz, las or ply."},
        },
        outputs={"point_cloud": "The point cloud (point_cloud.<format>).",
                 "metadata": "STAC-like metadata of the cloud (CRS, bounds, point count, sources)."},
        models=(model,),
        edges=(*((name, None, "pointcloud", name) for name in model.args),
               ("pointcloud", "point_cloud", "point_cloud", None), ("pointcloud", "metadata", "metadata", None)),
        requires=(("pointcloud", "build", "--dem", "--image", "--sampled-fraction", "--seed", "--format",
                   "--no-viewer"),),
        example={"dem": {"type": "Data", "url": "sample/dem.tif"}, "image": {"type": "Data", "url": "sample/tci.tif"},
                 "sampled_fraction": {"type": "number", "value": 0.5}, "seed": {"type": "integer", "value": 0},
                 "format": {"type": "string", "value": "laz"}},
        usage="eotwin sample -o sample   # the example inputs point at this scene",
        sample_inputs=lambda s: {"dem": {"type": "Data", "url": str(s["dem"])},
                                 "image": {"type": "Data", "url": str(s["tci"])},
                                 "sampled_fraction": {"type": "number", "value": 1.0},
                                 "format": {"type": "string", "value": "laz"}},
    )


def _pointcloud_live() -> Blueprint:
    model = ModelBlueprint(
        id="pointcloud",
        extras=("pointcloud", "live"),
        args={"bbox": "string", "date": "string", "sampled_fraction": "number", "format": "string",
              "cdse_key": "secret", "cdse_secret": "secret", "edh_token": "secret"},
        outputs={"point_cloud": "point_cloud.$(inputs.format)", "metadata": "point_cloud.$(inputs.format).json"},
        body=textwrap.dedent("""\
            bbox=$1 date=$2 fraction=$3 format=$4
            # credentials through the environment, so they are not on eotwin's command line
            export CDSE_S3_ACCESS_KEY=$5 CDSE_S3_SECRET_KEY=$6 EDH_TOKEN=$7
            python -m eotwin pointcloud build --bbox "$bbox" --date "$date" --sampled-fraction "$fraction" \\
                --format "$format" --output "point_cloud.$format" --no-viewer --no-preview
            """),
        cpu="2000m",
    )
    return Blueprint(
        name="eotwin-pointcloud",
        summary="Coloured point cloud of a bounding box: Sentinel-2 L2A from CDSE and the Copernicus DEM from "
                "Earth Data Hub.",
        description=("Searches the Copernicus Data Space STAC catalogue for Sentinel-2 L2A scenes over the "
                     "bounding box and dates, reads only the needed windows from CDSE S3 (least cloudy scenes, "
                     "clouds masked with SCL), slices the Copernicus DEM GLO-30 from DestinE Earth Data Hub, and "
                     "writes a georeferenced coloured point cloud (LAS 1.4 / LAZ / PLY) with STAC-like metadata. "
                     "Needs CDSE S3 keys and an Earth Data Hub token (typed secret). Runs `eotwin pointcloud "
                     "build --bbox --date`."),
        inputs={
            "bbox": {"type": "string", "description": "min_lon,min_lat,max_lon,max_lat (WGS84 degrees)."},
            "date": {"type": "string", "description": "START or START/END (ISO dates), e.g. 2024-07-01/2024-07-31."},
            "sampled_fraction": {"type": "number", "value": 0.2,
                                 "description": "Fraction of valid pixels kept, in (0, 1]."},
            "format": {"type": "string", "value": "laz", "description": "Output format: laz, las or ply."},
            "cdse_key": {"type": "secret", "description": "CDSE S3 access key id."},
            "cdse_secret": {"type": "secret", "description": "CDSE S3 secret access key."},
            "edh_token": {"type": "secret", "description": "DestinE Earth Data Hub personal access token."},
        },
        outputs={"point_cloud": "The point cloud (point_cloud.<format>).",
                 "metadata": "STAC-like metadata: the scenes used, CRS, bounds, point count."},
        models=(model,),
        edges=(*((name, None, "pointcloud", name) for name in model.args),
               ("pointcloud", "point_cloud", "point_cloud", None), ("pointcloud", "metadata", "metadata", None)),
        requires=(("pointcloud", "build", "--bbox", "--date", "--sampled-fraction", "--format", "--no-viewer"),),
        example={"bbox": {"type": "string", "value": "7.60,45.90,7.70,45.96"},
                 "date": {"type": "string", "value": "2024-07-01/2024-08-31"},
                 "sampled_fraction": {"type": "number", "value": 0.2},
                 "format": {"type": "string", "value": "laz"},
                 # left empty on purpose: the validator warns until they are filled in
                 "cdse_key": {"type": "secret", "secret_value": ""},
                 "cdse_secret": {"type": "secret", "secret_value": ""},
                 "edh_token": {"type": "secret", "secret_value": ""}},
        usage="# fill the three secret_value fields in a copy of inputs_file.json first (never commit it)",
    )


def _sample() -> Blueprint:
    model = ModelBlueprint(
        id="sample",
        extras=(),
        args={"size": "integer", "seed": "integer"},
        outputs={"dem": "sample/dem.tif", "tci": "sample/tci.tif", "l2a": "sample/l2a_10m.tif",
                 "scl": "sample/scl.tif"},
        body='python -m eotwin sample --output sample --size "$1" --seed "$2"\n',
    )
    return Blueprint(
        name="eotwin-sample",
        summary="The deterministic eotwin sample scene: DEM, Sentinel-2 L2A bands, TCI and SCL of an alpine valley.",
        description=("Writes the synthetic but physically consistent eotwin sample scene (UTM 32N, 10 m): a DEM "
                     "(EPSG:4326), the 10 m L2A bands, a true-colour image and a scene classification. Same size "
                     "and seed, same files: a source for offline tests and demonstrations of other components."),
        inputs={"size": {"type": "integer", "value": 600, "description": "Pixels per side of the 10 m grid (>= 64)."},
                "seed": {"type": "integer", "value": 42, "description": "Seed of the land-cover texture and clouds."}},
        outputs={"dem_file": "DEM GeoTIFF (metres, EPSG:4326).", "tci_file": "True-colour GeoTIFF (RGB, 8 bits).",
                 "l2a_file": "10 m L2A bands B02, B03, B04, B08 (DN).", "scl_file": "Scene classification (SCL)."},
        models=(model,),
        edges=(("size", None, "sample", "size"), ("seed", None, "sample", "seed"),
               ("sample", "dem", "dem_file", None), ("sample", "tci", "tci_file", None),
               ("sample", "l2a", "l2a_file", None), ("sample", "scl", "scl_file", None)),
        requires=(("sample", "--output", "--size", "--seed"),),
        example={"size": {"type": "integer", "value": 600}, "seed": {"type": "integer", "value": 42}},
        sample_inputs=lambda s: {"size": {"type": "integer", "value": 600}},
    )


def _sample_pointcloud() -> Blueprint:
    return Blueprint(
        name="eotwin-sample-pointcloud",
        summary="Sample scene -> point cloud: eotwin-sample feeding eotwin-pointcloud-files.",
        description=("A composite: the eotwin-sample component writes the sample scene, its DEM and true-colour "
                     "image go to the eotwin-pointcloud-files component, which writes the point cloud. Runs "
                     "offline end to end, as a check that a whole graph of eotwin components works."),
        inputs={"size": {"type": "integer", "value": 600, "description": "Pixels per side of the sample scene."},
                "seed": {"type": "integer", "value": 42, "description": "Seed of the sample scene."},
                "sampled_fraction": {"type": "number", "value": 0.25, "description": "Fraction of points kept."},
                "format": {"type": "string", "value": "laz", "description": "Output format: laz, las or ply."}},
        outputs={"point_cloud": "The point cloud of the sample scene.", "metadata": "Its STAC-like metadata."},
        dependencies={"scene": "eotwin-sample", "cloud": "eotwin-pointcloud-files"},
        edges=(("size", None, "scene", "size"), ("seed", None, "scene", "seed"),
               ("scene", "dem_file", "cloud", "dem"), ("scene", "tci_file", "cloud", "image"),
               ("seed", None, "cloud", "seed"), ("sampled_fraction", None, "cloud", "sampled_fraction"),
               ("format", None, "cloud", "format"),
               ("cloud", "point_cloud", "point_cloud", None), ("cloud", "metadata", "metadata", None)),
        example={"size": {"type": "integer", "value": 600}, "seed": {"type": "integer", "value": 42},
                 "sampled_fraction": {"type": "number", "value": 0.25}, "format": {"type": "string", "value": "laz"}},
        usage="# its dependencies are the sibling folders: pass their parent with --components",
        sample_inputs=lambda s: {"size": {"type": "integer", "value": 600},
                                 "sampled_fraction": {"type": "number", "value": 1.0}},
    )


def _ben_predict() -> Blueprint:
    model = ModelBlueprint(
        id="predict",
        extras=("ben",),
        args={"checkpoint": "Data", "image": "Data"},
        outputs={"labels": "labels.tif"},
        body='python -m eotwin ben predict "$1" "$2" --output labels.tif\n',
        cpu="2000m",
    )
    return Blueprint(
        name="eotwin-ben-predict",
        summary="BigEarthNet v2 land-cover labels (19 classes) for a Sentinel-2 image with a trained checkpoint.",
        description=("Runs a BigEarthNet v2 classifier trained with `eotwin ben train` over a Sentinel-2 L2A "
                     "image and writes per-patch label probabilities as a GeoTIFF. Runs `eotwin ben predict`."),
        inputs={"checkpoint": {"type": "Data", "description": "Checkpoint written by eotwin ben train."},
                "image": {"type": "Data", "description": "Sentinel-2 L2A GeoTIFF (bands named by description)."}},
        outputs={"labels": "GeoTIFF of label probabilities, one band per class."},
        models=(model,),
        edges=(("checkpoint", None, "predict", "checkpoint"), ("image", None, "predict", "image"),
               ("predict", "labels", "labels", None)),
        requires=(("ben", "predict", "--output"),),
        example={"checkpoint": {"type": "Data", "url": "ben-run/best.ckpt"},
                 "image": {"type": "Data", "url": "sample/l2a_10m.tif"}},
        sample_inputs=lambda s: {"checkpoint": {"type": "Data", "url": str(s["checkpoint"])},
                                 "image": {"type": "Data", "url": str(s["l2a"])}},
        sample_extras=("checkpoint",),
    )


def _atmocorr() -> Blueprint:
    model = ModelBlueprint(
        id="atmocorr",
        extras=("atmocorr",),
        args={"l1c": "Data", "method": "string"},
        outputs={"l2a": "out/l2a.tif", "tci": "out/tci.tif", "item": "out/item.json"},
        body='python -m eotwin atmocorr run "$1" --method "$2" --output out\n',
        cpu="2000m",  # no apt packages: the `atmocorr` extra runs the committed 6S table, not the 6S executable
    )
    return Blueprint(
        name="eotwin-atmocorr",
        summary="Sentinel-2 L1C top-of-atmosphere -> L2A-like surface reflectance (AI atmosphere + 6S, 6S with DDV, or DOS).",
        description=("Atmospheric correction of a Sentinel-2 L1C product (SAFE folder or zip, or an L1C GeoTIFF "
                     "stack) into an L2A-like product (DN = BOA x 10000 + 1000): by default (ai) a network estimates "
                     "the atmosphere and 6S inverts it, falling back to 6s-ddv on scenes unlike its training ones; "
                     "6s-ddv: 6S inversion with the aerosol optical thickness from dark dense vegetation and water "
                     "vapour from B09/B8A; dos: the dark object read through 6S. Writes the L2A stack, a true-colour "
                     "image and a STAC item. Runs `eotwin atmocorr run`."),
        inputs={"l1c": {"type": "Data", "description": "Sentinel-2 L1C SAFE (folder or zip) or L1C GeoTIFF stack."},
                "method": {"type": "string", "value": "ai", "description": "ai (default), 6s-ddv or dos."}},
        outputs={"l2a": "L2A-like surface reflectance GeoTIFF (DN = BOA x 10000 + 1000).",
                 "tci": "True-colour GeoTIFF of the corrected image.", "item": "STAC item of the product."},
        models=(model,),
        edges=(("l1c", None, "atmocorr", "l1c"), ("method", None, "atmocorr", "method"),
               ("atmocorr", "l2a", "l2a", None), ("atmocorr", "tci", "tci", None), ("atmocorr", "item", "item", None)),
        requires=(("atmocorr", "run", "--output", "--method"),),
        example={"l1c": {"type": "Data", "url": "sample_l1c/l1c_stack.tif"},
                 "method": {"type": "string", "value": "6s-ddv"}},
        usage="eotwin atmocorr sample-l1c -o sample_l1c   # the example input",
        sample_inputs=lambda s: {"l1c": {"type": "Data", "url": str(s["l1c"])},
                                 "method": {"type": "string", "value": "6s-ddv"}},
        sample_extras=("l1c",),
    )


def _l1c_pointcloud() -> Blueprint:
    return Blueprint(
        name="eotwin-l1c-pointcloud",
        summary="L1C -> atmospheric correction -> point cloud: eotwin-atmocorr feeding eotwin-pointcloud-files.",
        description=("A composite: eotwin-atmocorr corrects a Sentinel-2 L1C product to surface reflectance, its "
                     "true-colour image and a DEM go to eotwin-pointcloud-files, which writes the coloured point "
                     "cloud. The corrected L2A stack is an output too."),
        inputs={"l1c": {"type": "Data", "description": "Sentinel-2 L1C SAFE (folder or zip) or L1C GeoTIFF stack."},
                "dem": {"type": "Data", "description": "DEM raster covering the product (metres)."},
                "method": {"type": "string", "value": "ai", "description": "Correction: ai (default), 6s-ddv or dos."},
                "sampled_fraction": {"type": "number", "value": 1.0, "description": "Fraction of points kept."},
                "seed": {"type": "integer", "value": 0, "description": "Seed of the sampling."},
                "format": {"type": "string", "value": "laz", "description": "Output format: laz, las or ply."}},
        outputs={"point_cloud": "The point cloud coloured with surface reflectance.", "metadata": "Its metadata.",
                 "l2a": "The corrected L2A-like stack."},
        dependencies={"atmo": "eotwin-atmocorr", "cloud": "eotwin-pointcloud-files"},
        edges=(("l1c", None, "atmo", "l1c"), ("method", None, "atmo", "method"),
               ("atmo", "tci", "cloud", "image"), ("dem", None, "cloud", "dem"),
               ("sampled_fraction", None, "cloud", "sampled_fraction"), ("seed", None, "cloud", "seed"),
               ("format", None, "cloud", "format"), ("atmo", "l2a", "l2a", None),
               ("cloud", "point_cloud", "point_cloud", None), ("cloud", "metadata", "metadata", None)),
        example={"l1c": {"type": "Data", "url": "sample_l1c/l1c_stack.tif"},
                 "dem": {"type": "Data", "url": "sample/dem.tif"}},
        usage=("eotwin sample -o sample && eotwin atmocorr sample-l1c -o sample_l1c   # the example inputs\n"
               "# its dependencies are the sibling folders: pass their parent with --components"),
    )


BLUEPRINTS: dict[str, Callable[[], Blueprint]] = {
    "pointcloud": _pointcloud_live,
    "pointcloud-files": _pointcloud_files,
    "sample": _sample,
    "sample-pointcloud": _sample_pointcloud,
    "ben-predict": _ben_predict,
    "atmocorr": _atmocorr,
    "l1c-pointcloud": _l1c_pointcloud,
}


def blueprint(key: str) -> Blueprint:
    """The blueprint registered as ``key`` (``pointcloud``) or named ``key`` (``eotwin-pointcloud``)."""
    for k, make in BLUEPRINTS.items():
        if key in (k, f"eotwin-{k}"):
            return make()
    raise EotwinError(f"unknown component '{key}' (known: {', '.join(BLUEPRINTS)})")


# ---------------------------------------------------------------- which eotwin commands exist

def command_options() -> dict[tuple[str, ...], set[str]]:
    """Every command a component may run (``("pointcloud", "build")``) with its long flags, from the registry."""
    from eotwin.commands import command_flags

    return command_flags()


def missing_commands(bp: Blueprint, commands: dict[tuple[str, ...], set[str]] | None = None) -> list[str]:
    """What this eotwin lacks to run ``bp`` (``[]``: it can be built): commands or options, as text."""
    commands = command_options() if commands is None else commands
    missing = []
    for need in bp.requires:
        path = tuple(p for p in need if not p.startswith("-"))
        opts = [p for p in need if p.startswith("-")]
        if path not in commands:
            missing.append(f"eotwin {' '.join(path)}")
            continue
        absent = [o for o in opts if o not in commands[path]]
        if absent:
            missing.append(f"eotwin {' '.join(path)} {' '.join(absent)}")
    for dep in bp.dependencies.values():
        missing += [f"{m} (for {dep})" for m in missing_commands(blueprint(dep), commands)]
    return missing


def available() -> dict[str, list[str]]:
    """Each registered component with what it lacks (an empty list: buildable now)."""
    commands = command_options()
    return {BLUEPRINTS[k]().name: missing_commands(BLUEPRINTS[k](), commands) for k in BLUEPRINTS}
