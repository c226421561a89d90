"""Wall time and peak memory of `import-weights` on a ViT-L-sized checkpoint (random weights).

A user's laptop must import a 1.2 GB BioCLIP 2 / DINOv2 ViT-L file. This writes such a file to a
temporary folder (DINOv2 ViT-L/14 release layout, 304 M parameters, fp32: 1.2 GB; or with
`--layout openclip`, open_clip's ViT-L-14 CLIP with its text tower, when open_clip is installed),
then imports it in a fresh process and prints that process's wall time and peak RSS.

    OMP_NUM_THREADS=1 python bench/import_memory.py [--layout dinov2|openclip] [--img-size N]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CHILD = """
import sys, time, resource
t0 = time.perf_counter()
from ssl_benthic.weights.import_weights import import_weights
t1 = time.perf_counter()
kwargs = {{"img_size": {img_size}}} if {img_size} else {{}}
result = import_weights(sys.argv[1], sys.argv[2], **kwargs)
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"{{t1 - t0:.1f}} {{t2 - t1:.1f}} {{rss:.0f}} {{result.meta['timm_name']}}")
"""


def _dinov2_vitl(path: Path) -> None:
    import timm

    model = timm.create_model("vit_large_patch14_dinov2", pretrained=False, num_classes=0)
    state = model.state_dict()
    state["mask_token"] = torch.zeros(1, 1024)
    torch.save(state, path)


def _openclip_vitl(path: Path) -> None:
    import open_clip

    model = open_clip.create_model("ViT-L-14", pretrained=None)
    torch.save(model.state_dict(), path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=("dinov2", "openclip"), default="dinov2")
    parser.add_argument("--img-size", type=int, default=0, help="import for this size (0: own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.layout}_vitl14.pth"
        (_dinov2_vitl if args.layout == "dinov2" else _openclip_vitl)(path)
        size_gb = path.stat().st_size / 1e9
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        code = CHILD.format(img_size=args.img_size)
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code, str(path), str(Path(tmp) / "out")],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split()
        wall = time.perf_counter() - start
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        "| layout | file | timm model | img size | python+imports s | import s | total s | peak RSS MiB |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    size = args.img_size or "release"
    print(
        f"| {args.layout} | {size_gb:.2f} GB | {out[3]} | {size} | {out[0]} | {out[1]} | "
        f"{wall:.1f} | {max(float(out[2]), child_rss):.0f} |"
    )


if __name__ == "__main__":
    main()
