"""solo-multiview: K-view self-supervised learning on long-tailed data, a solo-learn plugin."""

__version__ = "0.1.0"
