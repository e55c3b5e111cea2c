"""Checkpoints written like every other eotwin output: a temporary beside the target, renamed when complete.

Lightning's own writer stages a checkpoint in the system temporary folder and then moves it: across
filesystems that move is a copy, so a kill -9 mid-copy leaves a truncated ``last.ckpt`` that ``--resume``
cannot load, and the staged copy stays in ``$TMPDIR`` forever. Through :func:`eotwin.io.files.atomic_path`
the previous checkpoint stays whole until the new one is, and the next save reclaims a killed writer's
temporary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from eotwin.io.files import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint format, written atomically beside the target."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        import torch

        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)
