"""Shared test set-up: small thread counts so the suite behaves the same on a 2-core CI machine."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for model hubs

import torch  # noqa: E402

torch.set_num_threads(1)
