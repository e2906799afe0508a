"""Where DALI runs: the import guard and the ``dali.device`` choice.

``dali.device``: ``auto`` (GPU when ``torch.cuda.is_available()``, else CPU), ``cpu`` (every
operator on the CPU, pipeline ``device_id=None``: what tests and CI run) or ``gpu`` (``mixed``
nvJPEG decoding and GPU augmentation on ``torch.cuda.current_device()``; an error without CUDA).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from types import ModuleType
from typing import Optional

import torch

from solo_multiview.config.schema import setting

DEVICES = ("auto", "cpu", "gpu")
INSTALL_HINT = 'pip install -e ".[dali]"'


@dataclass
class DaliConfig:
    """``dali.*``, used with ``data.format: dali``."""

    device: str = setting("auto", "where DALI runs (auto: gpu when CUDA is available)",
                          choices=DEVICES)
    num_threads: Optional[int] = setting(None, "CPU threads per pipeline (null: "
                                         "data.num_workers)", minimum=1)
    pipelines: Optional[int] = setting(None, "parallel pipelines (null: one per thread on "
                                       "CPU)", minimum=1)
    prefetch_queue_depth: int = setting(2, "batches prepared ahead", minimum=1)


def dali_available() -> bool:
    """True when ``nvidia.dali`` can be imported."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except (ImportError, ValueError):  # "nvidia" missing, or a namespace without a spec
        return False


def require_dali() -> ModuleType:
    """``nvidia.dali``, or an ImportError that says how to install it."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn  # noqa: F401  (submodules used by the pipeline)
        import nvidia.dali.types  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "data.format=dali needs NVIDIA DALI, which is not installed: run "
            f"{INSTALL_HINT} (it installs nvidia-dali-cuda130; DALI's CPU mode needs no GPU), or "
            f"use data.format=image_folder. ({err})"
        ) from err
    return dali


@dataclass(frozen=True)
class DaliDevice:
    """``kind`` is ``cpu`` or ``gpu``; ``device_id`` the CUDA device (None on the CPU)."""

    kind: str
    device_id: Optional[int]

    @property
    def decoder(self) -> str:
        """The image decoder's device: ``mixed`` (nvJPEG, output on the GPU) or ``cpu``."""
        return "mixed" if self.kind == "gpu" else "cpu"


def device_kind(choice: Optional[str]) -> str:
    """``cpu`` or ``gpu`` for ``dali.device`` (None means ``auto``), without touching CUDA
    beyond ``torch.cuda.is_available()``; ValueError for an unknown value or ``gpu`` without
    CUDA."""
    choice = "auto" if choice is None else str(choice)
    if choice not in DEVICES:
        raise ValueError(f"dali.device: unknown value {choice!r}; choose one of {list(DEVICES)}")
    cuda = torch.cuda.is_available()
    if choice == "gpu" and not cuda:
        raise ValueError(
            "dali.device: 'gpu' but torch.cuda.is_available() is False (no CUDA device or a "
            "CPU-only torch); use dali.device=cpu (or auto) to run DALI's CPU pipeline"
        )
    return "cpu" if choice == "cpu" or not cuda else "gpu"


def resolve_device(choice: Optional[str]) -> DaliDevice:
    """The device for ``dali.device``; the CUDA device is the current one, so call this where
    the training process has already picked its GPU (it initialises CUDA)."""
    if device_kind(choice) == "cpu":
        return DaliDevice("cpu", None)
    return DaliDevice("gpu", int(torch.cuda.current_device()))
