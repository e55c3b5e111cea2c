"""The embedded sample scene: a deterministic alpine valley in UTM zone 32N, used by ``eotwin demo``."""

from eotwin.sample.scene import SampleScene, make_scene

__all__ = ["SampleScene", "make_scene"]
