"""The solo host: solo-learn's own base classes with the batched K-view step in front.

Importing this module imports solo-learn (raises ImportError when it is not installed) and
applies the compatibility fixes of ``hosts/solo_compat.py``. solo-learn builds the backbone in its
own ``__init__``; ``backbone.stem`` / ``backbone.cifar_stem_padding`` are applied right after it
(``solo_compat.apply_backbone_stem``), before the method builds its heads.
"""

from __future__ import annotations

import omegaconf
from solo.methods.base import BaseMethod as SoloBaseMethod
from solo.methods.base import BaseMomentumMethod as SoloBaseMomentumMethod

from solo_multiview.hosts import solo_compat
from solo_multiview.hosts.multiview_step import MultiViewStepMixin

solo_compat.apply()


class BaseMethod(MultiViewStepMixin, SoloBaseMethod):
    """solo-learn's BaseMethod with one backbone call per crop size."""

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        solo_compat.apply_backbone_stem(self, cfg)


class BaseMomentumMethod(MultiViewStepMixin, SoloBaseMomentumMethod):
    """solo-learn's BaseMomentumMethod with one backbone (and momentum backbone) call per crop
    size."""

    def __init__(self, cfg: omegaconf.DictConfig):
        super().__init__(cfg)
        solo_compat.apply_backbone_stem(self, cfg)
