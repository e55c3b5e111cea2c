"""BigEarthNet training: timm models with band-adapted pretrained weights, fine-tuning modes, imbalance-aware
losses, multispectral augmentation, per-class thresholds, PyTorch Lightning training, evaluation and
sliding-window prediction on GeoTIFFs.

Pure cores (``losses``, ``augment``, ``thresholds``, ``finetune``, ``models``) take tensors and plain
values; ``datamodule``, ``module`` and ``pipeline`` compose them with the data layer; ``predict`` reads and
writes rasters. Torch is imported by these modules, never by ``eotwin.ben`` itself.
"""
