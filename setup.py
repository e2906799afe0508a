"""Packaging for solo-multiview: K-view self-supervised learning on long-tailed data."""

from pathlib import Path

from setuptools import find_packages, setup

README = Path(__file__).parent / "README.md"

setup(
    name="solo-multiview",
    version="0.1.0",
    description=(
        "More-than-two-view self-supervised learning (MTTV/MIMV and K-view SimCLR, BYOL, ...) "
        "on long-tailed data, as a plugin for solo-learn"
    ),
    long_description=README.read_text() if README.exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["solo_multiview", "solo_multiview.*"]),
    package_data={"solo_multiview": ["py.typed"]},
    install_requires=[
        # torch 2.14.1 / torchvision 0.29.1 are what the reference machine has on disk.
        "torch>=2.1,<3",
        "torchvision>=0.16",
        "lightning>=2.1",
        "torchmetrics>=1.0",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "timm>=0.9",
        "scikit-learn>=1.2",
        "numpy>=1.23",
        "pillow>=9",
        "matplotlib>=3.6",
    ],
    extras_require={
        "dali": ["nvidia-dali-cuda130>=2.4"],
        "wandb": ["wandb"],
        "test": ["pytest>=7", "ruff>=0.5"],
        # the mutation run of docs/testing.md (not part of CI)
        "mutation": ["mutmut==3.8.1"],
    },
)
