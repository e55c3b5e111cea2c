"""ONNX export (torch, training side) and tiled inference through onnxruntime (no torch).

The network's context is a set of window means (see :mod:`eotwin.atmocorr.ai.model`), so a tile
processed with ``overlap`` = half the widest window of extra pixels on every side gives exactly the
values of one pass over the whole image in its interior: :func:`OnnxModel.predict` cuts any image
into such tiles, which bounds memory whatever the image size.

The ONNX file carries its configuration (windows, overlap, band order) as metadata, so a model file
is self-describing; :class:`AiCorrector` plugs it into ``eotwin atmocorr run``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from eotwin.atmocorr.ai import DEFAULT_MODEL_PATH
from eotwin.atmocorr.products import L2A_BANDS, interpolate_azimuth, interpolate_nodes
from eotwin.errors import EotwinError
from eotwin.progress import ProgressReporter, ensure_progress

if TYPE_CHECKING:  # pragma: no cover
    from eotwin.atmocorr.ai.model import AtmoNet
    from eotwin.atmocorr.pipeline import BlockResult, SceneSample
    from eotwin.atmocorr.products import AngleGrid, L1CProduct
    from eotwin.geo.grid import Grid, Window

OPSET = 17
DEFAULT_TILE = 512
METADATA_KEY = "eotwin_atmocorr"


def export_onnx(model: AtmoNet, path: str | Path, extra: dict | None = None) -> Path:
    """Write the network as ONNX (dynamic batch and size) with its configuration as metadata."""
    import onnx
    import torch

    from eotwin.io.files import atomic_path

    model = model.eval()
    toa = torch.full((1, 12, 64, 64), 0.1)
    angles = torch.full((1, 3, 64, 64), 30.0)
    valid = torch.ones((1, 1, 64, 64))
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and shape-inference notes
        torch.onnx.export(
            model,
            (toa, angles, valid),
            str(tmp),
            input_names=["toa", "angles", "valid"],
            output_names=["boa", "aot", "terms"],
            dynamic_axes={k: {0: "n", 2: "h", 3: "w"} for k in ("toa", "angles", "valid", "boa", "aot", "terms")},
            opset_version=OPSET,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        meta = {"config": model.config.to_dict(), "bands": list(L2A_BANDS), "overlap": model.config.overlap,
                "stride": model.config.stride, **(extra or {})}
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
        onnx.save(proto, str(tmp))
    return path


class OnnxModel:
    """An exported model in an onnxruntime session, with tiled prediction over images of any size."""

    def __init__(self, path: str | Path | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else DEFAULT_MODEL_PATH
        if not self.path.is_file():
            raise EotwinError(f"AI model not found: {self.path} (train one with `eotwin atmocorr train`)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or min(os.cpu_count() or 1, 8)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = False  # the arena keeps every tile's peak allocation: RSS grows, speed does not
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EotwinError(f"cannot load AI model {self.path}: {str(exc).splitlines()[0]}") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise EotwinError(f"{self.path} is not an eotwin atmospheric-correction model (no {METADATA_KEY} metadata)")
        self.metadata = json.loads(raw)
        if tuple(self.metadata["bands"]) != L2A_BANDS:
            raise EotwinError(f"{self.path}: model bands {self.metadata['bands']} differ from {list(L2A_BANDS)}")
        self.overlap = int(self.metadata["overlap"])
        self.stride = int(self.metadata["stride"])

    def run(self, toa: np.ndarray, angles: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One pass over (12, h, w) TOA, (3, h, w) angles, (h, w) validity: (boa (12, h, w), aot (h, w))."""
        feeds = {
            "toa": np.nan_to_num(toa, nan=0.0).astype(np.float32, copy=False)[None],
            "angles": angles.astype(np.float32, copy=False)[None],
            "valid": valid.astype(np.float32)[None, None],
        }
        boa, aot = self.session.run(["boa", "aot"], feeds)
        return boa[0], aot[0, 0]

    def predict(
        self,
        toa: np.ndarray,
        angles: np.ndarray,
        valid: np.ndarray | None = None,
        *,
        tile: int = DEFAULT_TILE,
        progress: ProgressReporter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """BOA (12, h, w) and AOT (h, w) of an image of any size, tile by tile with overlap; NaN where invalid.

        Tiles start on multiples of the model's stride from the image origin, so a caller that cuts a
        larger image must cut it there too (see :class:`AiCorrector`) for results equal to one pass.
        """
        toa = np.asarray(toa, dtype=np.float32)
        if toa.ndim != 3 or toa.shape[0] != len(L2A_BANDS):
            raise EotwinError(f"TOA stack must be (12, h, w) of the bands {', '.join(L2A_BANDS)}, got {toa.shape}")
        h, w = toa.shape[1:]
        if angles.shape != (3, h, w):
            angles = np.broadcast_to(angles, (3, h, w))
        valid = np.isfinite(toa).all(axis=0) if valid is None else valid & np.isfinite(toa).all(axis=0)
        if tile <= 0:
            raise EotwinError("tile size must be positive")
        tile = -(-tile // self.stride) * self.stride
        boa = np.full((len(L2A_BANDS), h, w), np.nan, dtype=np.float32)
        aot = np.full((h, w), np.nan, dtype=np.float32)
        o = self.overlap
        starts = [(r, c) for r in range(0, h, tile) for c in range(0, w, tile)]
        with ensure_progress(progress).task("AI correction (onnxruntime)", total=len(starts)) as task:
            for r, c in starts:
                r0, c0 = max(r - o, 0), max(c - o, 0)
                r1, c1 = min(r + tile + o, h), min(c + tile + o, w)
                sl = (slice(r0, r1), slice(c0, c1))
                b, a = self.run(toa[(slice(None), *sl)], np.ascontiguousarray(angles[(slice(None), *sl)]), valid[sl])
                inner = (slice(r - r0, r - r0 + min(tile, h - r)), slice(c - c0, c - c0 + min(tile, w - c)))
                out = (slice(r, r + min(tile, h - r)), slice(c, c + min(tile, w - c)))
                boa[(slice(None), *out)] = b[(slice(None), *inner)]
                aot[out] = a[inner]
                task.advance()
        boa[:, ~valid] = np.nan
        aot[~valid] = np.nan
        return boa, aot


def block_angles(angles: AngleGrid, grid: Grid, window: Window) -> np.ndarray:
    """(3, h, w) model angles of a block: sun zenith, band-mean view zenith and relative azimuth."""
    from eotwin.atmocorr.physics import relative_azimuth

    wr, wc = angles.weights(grid, window)
    shape = (window.height, window.width)
    sza = interpolate_nodes(angles.sun_zenith, wr, wc)
    vza = interpolate_nodes(np.mean([angles.view_zenith[b] for b in L2A_BANDS if b in angles.view_zenith], axis=0),
                            wr, wc)
    saa = interpolate_azimuth(angles.sun_azimuth, wr, wc)
    band = "B8A" if "B8A" in angles.view_azimuth else next(iter(angles.view_azimuth))
    vaa = interpolate_azimuth(angles.view_azimuth[band], wr, wc)
    raa = relative_azimuth(saa, vaa)
    return np.stack([np.broadcast_to(v, shape) for v in (sza, vza, raa)]).astype(np.float32)


@dataclass
class AiCorrector:
    """The ``ai`` method of ``eotwin atmocorr run``: the ONNX network per block, with row overlap for its context."""

    model_path: Path | None = None
    name: str = "ai"
    overlap: int = 0
    gives_aot_map: bool = True
    _model: OnnxModel | None = field(default=None, repr=False)
    _angles: AngleGrid | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._model = OnnxModel(self.model_path)
        self.overlap = self._model.overlap + self._model.stride

    def prepare(self, product: L1CProduct, sample: SceneSample) -> dict[str, object]:
        self._angles = product.angles
        meta = self._model.metadata if self._model else {}
        return {"model": str(self._model.path.name if self._model else ""), "model_version": meta.get("version", "")}

    def correct(self, toa: np.ndarray, grid: Grid, window: Window, valid: np.ndarray) -> BlockResult:
        from eotwin.atmocorr.pipeline import BlockResult

        if self._angles is None or self._model is None:
            raise EotwinError("the AI corrector was not prepared")
        angles = block_angles(self._angles, grid, window)
        # the model samples its head every `stride` pixels from the image origin: start on such a row
        # (the rows skipped are context rows, the pipeline gives one stride more than the model needs)
        skip = (-window.row_off) % self._model.stride if window.row_off > 0 else 0
        boa = np.full(toa.shape, np.nan, dtype=np.float32)
        aot = np.full(toa.shape[1:], np.nan, dtype=np.float32)
        boa[:, skip:], aot[skip:] = self._model.predict(toa[:, skip:], angles[:, skip:], valid[skip:])
        return BlockResult(boa, aot)
