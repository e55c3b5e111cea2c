"""AI atmospheric correction: a small network trained on 6S-simulated scenes, run through onnxruntime.

- :mod:`.surfaces`: the surface library by source (BigEarthNet, Major-TOM, EnMAP, Sahara, water, PROSAIL)
  and leave-one-source-out splits;
- :mod:`.synth`: training/test scenes (real surfaces + 6S built-in spectra through the 6S
  table with sampled atmospheres, smooth AOT fields and sensor noise);
- :mod:`.model`: the torch network and the 6S table in torch (training only);
- :mod:`.cells`: numpy pieces shared by training and inference (cell inputs, table terms, upsampling);
- :mod:`.train`: CPU training, export of the weights and the ONNX file;
- :mod:`.onnx_infer`: tiled inference with onnxruntime (no torch);
- :mod:`.corrector`: the pipeline's ``ai`` corrector (:func:`~.corrector.make_corrector`);
- :mod:`.evaluate`: held-out evaluation against the 6S oracle, DDV+6S, DOS and "no correction", and the
  leave-one-source-out evaluation on scenes made with the real 6S code.

Importing this package is cheap (no torch, no onnxruntime): the pipeline asks :func:`model_available`
to choose its default method.
"""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_MODEL_PATH = DATA_DIR / "ai_atmocorr.onnx"
DEFAULT_WEIGHTS_PATH = DATA_DIR / "ai_atmocorr.pt"


def model_available(path: Path | None = None) -> bool:
    """Whether the (committed) ONNX model exists, so ``ai`` can be the default method."""
    return (path or DEFAULT_MODEL_PATH).is_file()
