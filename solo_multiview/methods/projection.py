"""Projector (and predictor) outputs shared by the methods, written once.

A method that owns ``self.projector`` (and optionally ``self.predictor``, and for momentum
methods ``self.momentum_projector``) lists one of these mixins before its host marker base:

    class MVSimCLR(ProjectorOutputs, BaseMethod): ...

and gets, on either host, the projector (and predictor) in the optimizer, ``z`` (and ``p``)
added to ``forward`` / ``multicrop_forward`` outputs, and, with the momentum mixin, the EMA pair
(projector, momentum_projector) and ``z`` in ``momentum_forward``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class ProjectorOutputs:
    """``z = projector(feats)`` (L2-normalised when ``normalize_projection``), ``p =
    predictor(z)`` when the method has a predictor."""

    normalize_projection = False
    predictor_static_lr = False  # SimSiam keeps its predictor's lr constant

    def _project(self, out: Dict[str, Any], projector: nn.Module) -> Dict[str, Any]:
        z = projector(out["feats"])
        out["z"] = F.normalize(z, dim=-1) if self.normalize_projection else z
        return out

    @property
    def learnable_params(self) -> List[Dict[str, Any]]:
        groups = [{"name": "projector", "params": self.projector.parameters()}]
        if getattr(self, "predictor", None) is not None:
            groups.append({"name": "predictor", "params": self.predictor.parameters(),
                           "static_lr": self.predictor_static_lr})
        return super().learnable_params + groups

    def forward(self, X: torch.Tensor) -> Dict[str, Any]:
        return self._predict(self._project(super().forward(X), self.projector))

    def multicrop_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        return self._predict(self._project(super().multicrop_forward(X), self.projector))

    def _predict(self, out: Dict[str, Any]) -> Dict[str, Any]:
        # under MIMV the predictor reads the fused projection (hosts/multiview_step.py)
        if getattr(self, "predictor", None) is not None and self.view_spec.scheme != "pairs":
            out["p"] = self.predictor(out["z"])
        return out


class MomentumProjectorOutputs(ProjectorOutputs):
    """Adds the EMA projector: trained as a momentum pair, ``z`` in ``momentum_forward``."""

    @property
    def momentum_pairs(self) -> List[Tuple[nn.Module, nn.Module]]:
        return super().momentum_pairs + [(self.projector, self.momentum_projector)]

    @torch.no_grad()
    def momentum_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        return self._project(super().momentum_forward(X), self.momentum_projector)
