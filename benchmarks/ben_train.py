"""BigEarthNet training throughput: images per second per model and band set (S2 10 + 20 m, and S1 + S2 'all').

Forward + backward + optimizer step on random (C, 120, 120) batches, C from the band set (``s2-10``: 10, ``all``:
VV, VH + 12 S2 bands = 14); the data loader is measured by ``ben_loader.py``. On the CPU in float32; on a CUDA GPU
per model: float32, bf16 autocast, and bf16 autocast + channels-last (what ``eotwin ben train`` uses on a GPU).

Usage: ``.venv/bin/python benchmarks/ben_train.py [--batch 32] [--steps 5] [--bands s2-10,all]
[--models resnet50,resnet26,vit_small_patch8_224] [--gpu-batch 256] [--no-cpu]``
"""

from __future__ import annotations

import argparse
import time

import torch

from eotwin.ben.bands import resolve_bands
from eotwin.ben.train.models import build_model


def images_per_second(name: str, channels: int, device: str, batch: int, steps: int, bf16: bool,
                      channels_last: bool) -> float:
    model = build_model(name, in_chans=channels, num_classes=19, img_size=120).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, channels, 120, 120, device=device).to(memory_format=memory_format)
    y = (torch.rand(batch, 19, device=device) > 0.8).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        optimizer.step()

    step()  # warm-up (allocations, cuDNN autotuning)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="CPU batch size")
    parser.add_argument("--steps", type=int, default=5, help="timed CPU steps")
    parser.add_argument("--gpu-batch", type=int, default=256)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--bands", default="s2-10,all", help="band sets, comma separated")
    parser.add_argument("--models", default="resnet50,resnet26,vit_small_patch8_224")
    parser.add_argument("--no-cpu", action="store_true", help="GPU figures only")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CUDA: "
          f"{torch.cuda.get_device_name(0) if cuda else 'none'}")
    for band_set in args.bands.split(","):
        channels = len(resolve_bands(band_set))
        for name in args.models.split(","):
            parts = [f"{name:24s} {band_set:7s} ({channels:2d} ch)"]
            if not args.no_cpu:
                cpu = images_per_second(name, channels, "cpu", args.batch, args.steps, bf16=False, channels_last=False)
                parts.append(f"CPU fp32 {cpu:8.1f}")
            if cuda:
                for label, bf16, channels_last in (("GPU fp32", False, False), ("GPU bf16", True, False),
                                                   ("GPU bf16+channels-last", True, True)):
                    rate = images_per_second(name, channels, "cuda", args.gpu_batch, args.gpu_steps, bf16, channels_last)
                    parts.append(f"{label} {rate:9.1f}")
            print(" | ".join(parts) + " images/s", flush=True)


if __name__ == "__main__":
    main()
