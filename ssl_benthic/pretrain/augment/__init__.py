"""`transform.device: accelerator`: view augmentation split between loader workers and the device.

The loader workers decode and cut each view's random resized crop to uint8 (`worker`); the rest of
every view (flips, colour jitter, grayscale, blur, solarisation, normalisation) runs batched on the
training device with per-sample parameters (`ops`, `device`). Both halves are read out of the
method's constructed lightly transform (`translate`), so they cannot drift from the CPU path.
"""

from ssl_benthic.pretrain.augment.device import (
    BatchOnDevice,
    ChannelsLast,
    DeviceViews,
    augment_generator,
)
from ssl_benthic.pretrain.augment.translate import ViewPlan, plan_views
from ssl_benthic.pretrain.augment.worker import WorkerCrops, decode_for_crops, make_crop_loader

__all__ = [
    "BatchOnDevice",
    "ChannelsLast",
    "DeviceViews",
    "ViewPlan",
    "WorkerCrops",
    "augment_generator",
    "decode_for_crops",
    "make_crop_loader",
    "plan_views",
]
