"""The one device picker: 'auto' follows the hardware, an explicit CUDA ask without a GPU is an error."""

import pytest
import torch

from ssl_benthic.core.devices import on_gpu, pick_device, process_device
from ssl_benthic.core.errors import ConfigError


def test_names_map_to_torch_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("gpu:1") == torch.device("cuda:1")
    assert pick_device("cpu") == torch.device("cpu")
    assert on_gpu("auto") and on_gpu("gpu") and not on_gpu("cpu")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert process_device("auto") == torch.device("cuda:3")


def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    assert process_device("gpu") == torch.device("cpu")
    assert not on_gpu("auto")
    with pytest.raises(ConfigError, match="cuda:0.*no CUDA GPU"):
        pick_device("cuda:0")
