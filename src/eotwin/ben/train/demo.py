"""Demo step: a short BigEarthNet training run on the 24 real v2 patches, then a prediction on the sample scene.

A demonstration that every stage runs end to end (data -> Lightning training -> tuned thresholds ->
evaluation -> georeferenced prediction), not a benchmark: 6 train, 6 validation and 6 test patches and
a few epochs cannot say anything about accuracy on BigEarthNet. The prediction runs the model on the
synthetic sample scene (4 bands at 10 m), so it shows the output format, not real land cover.
"""

from __future__ import annotations

from pathlib import Path

from eotwin.report.demo import Artifact, DemoContext

_REPO = Path(__file__).resolve().parents[4]
MOCK_DIR = _REPO / ".eotwin-data" / "BENv2"
SMOKE_CONFIG = _REPO / "configs" / "ben" / "smoke.yaml"


def ben_training_demo(context: DemoContext) -> list[Artifact]:
    """Train resnet18 for a few epochs on the 24 real patches; return curves, results and a prediction map."""
    from eotwin.ben.train.config import PredictOptions, load_config
    from eotwin.ben.train.metrics import headline
    from eotwin.ben.train.pipeline import run_training
    from eotwin.ben.train.predict import run_predict
    from eotwin.errors import EotwinError

    if not (MOCK_DIR / "metadata.parquet").is_file():
        raise EotwinError(f"{MOCK_DIR} is missing: run `make setup` to unpack the 24 real BigEarthNet v2 patches")
    output = context.step_dir("ben_training")
    run_dir = output / "run"
    overrides = [f"output={run_dir}", f"data.source={MOCK_DIR}", "name=demonstration (24 real patches)",
                 "trainer.max_epochs=3"]
    config = load_config(SMOKE_CONFIG if SMOKE_CONFIG.is_file() else None, overrides)
    if (run_dir / "checkpoints" / "last.ckpt").is_file():  # a rerun of the demo starts afresh
        import shutil

        shutil.rmtree(run_dir)
    result = run_training(config, progress=context.progress)
    prediction = run_predict(PredictOptions(checkpoint=result.best_checkpoint, image=context.sample.l2a,
                                            output=output / "sample_prediction.tif", stride=60),
                             progress=context.progress)
    rel = output.relative_to(context.output_dir)
    test = result.scores.get("test", {}).get("tuned")
    summary = f"test (6 patches, tuned thresholds): {headline(test)}" if test else ""
    artifacts = [
        Artifact("Training curves (demonstration, 24 real patches)", rel / "run" / "curves.png", "image",
                 f"{config.model.name}, {result.epochs} epochs on CPU; a demonstration, not a benchmark"),
        Artifact("Training results (JSON)", rel / "run" / "results.json", "metrics",
                 summary or "scores per split at 0.5 and at the tuned thresholds"),
        Artifact("Prediction on the sample scene (most probable class)", rel / "sample_prediction.png", "image",
                 "synthetic scene: shows the output format only"),
        Artifact("Per-class probability GeoTIFF", rel / "sample_prediction.tif", "data",
                 f"19 bands, {prediction.shape[0]} x {prediction.shape[1]} cells of {prediction.cell_size:g} m, UTM 32N"),
    ]
    return artifacts
