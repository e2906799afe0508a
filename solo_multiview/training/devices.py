"""How many processes a run has (for the learning-rate scaling and the resume key)."""

from __future__ import annotations

from typing import Any

import omegaconf
import torch


def count_devices(devices: Any, accelerator: str) -> int:
    """How many devices Lightning will use for ``devices`` (list, int, -1 or "auto")."""
    if isinstance(devices, (list, tuple, omegaconf.ListConfig)):
        return len(devices)
    gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
    if devices in ("auto", -1, "-1"):
        return max(1, gpus)
    return int(devices)
