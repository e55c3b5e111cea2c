"""``eotwin sample``: write the embedded sample scene as GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import typer

from eotwin.cli import _common


def sample_command(
    output: Path = typer.Option(Path("sample"), "--output", "-o", help="Directory to write the scene into."),
    size: int = typer.Option(600, min=64, max=20000, help="Pixels per side of the 10 m image grid."),
    seed: int = typer.Option(42, help="Seed of the land-cover texture and clouds."),
) -> None:
    """Write the deterministic sample scene (UTM 32N alpine valley): DEM, L2A bands, TCI, SCL."""
    from eotwin.options import validated
    from eotwin.sample.files import write_sample
    from eotwin.sample.options import SampleOptions

    options = validated(SampleOptions, output=output, size=size, seed=seed)
    files = write_sample(options.output, size=options.size, seed=options.seed, progress=_common.progress())
    for label, path in (("dem", files.dem), ("l2a", files.l2a), ("tci", files.tci), ("scl", files.scl), ("metadata", files.metadata)):
        _common.out.print(f"{label:9s} {path}")
