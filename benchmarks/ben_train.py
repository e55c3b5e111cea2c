"""BigEarthNet training throughput: images per second for resnet50, resnet26 and the 120 px ViT.

Forward + backward + optimizer step on random 12-band 120 x 120 batches (the data loader is measured
by ``ben_loader.py``). On the CPU in float32; on a CUDA GPU also with bf16 autocast and channels-last.

Usage: ``.venv/bin/python benchmarks/ben_train.py [--batch 32] [--steps 5] [--models resnet50,resnet26,vit_small_patch8_224]``
"""

from __future__ import annotations

import argparse
import time

import torch

from eotwin.ben.train.models import build_model


def images_per_second(name: str, device: str, batch: int, steps: int, bf16: bool, channels_last: bool) -> float:
    model = build_model(name, in_chans=12, num_classes=19, img_size=120).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 12, 120, 120, device=device).to(memory_format=memory_format)
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
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--models", default="resnet50,resnet26,vit_small_patch8_224")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CUDA: {torch.cuda.is_available()}")
    for name in args.models.split(","):
        cpu = images_per_second(name, "cpu", args.batch, args.steps, bf16=False, channels_last=False)
        line = f"{name:24s} CPU fp32: {cpu:8.1f} images/s"
        if torch.cuda.is_available():
            gpu = images_per_second(name, "cuda", max(args.batch, 256), max(args.steps, 20), bf16=True, channels_last=True)
            line += f" | GPU bf16 channels-last: {gpu:8.1f} images/s"
        print(line, flush=True)


if __name__ == "__main__":
    main()
