"""The host contract: what a method may rely on from the base class it is built on.

A method is written once, as a subclass of :class:`BaseMethod` or :class:`BaseMomentumMethod`
below, in solo-learn's style (``super().__init__(cfg)``, ``add_and_assert_specific_cfg``,
``learnable_params``, ``forward``, ``training_step`` calling ``super().training_step``). These two
classes carry no behaviour: :func:`solo_multiview.hosts.compose` puts the host's real base class
behind them in the MRO, so ``super()`` inside a method reaches either solo-learn's
``solo.methods.base.BaseMethod`` or the built-in one (``hosts/builtin.py``).

What every host provides (solo-learn's names and meanings):

* ``__init__(cfg)`` calls ``self.add_and_assert_specific_cfg(cfg)`` first, then builds
  ``self.backbone`` (flat features of size ``self.features_dim``), ``self.classifier`` (the online
  linear probe, trained on detached features), and reads ``self.num_large_crops``,
  ``self.num_small_crops``, ``self.max_epochs``, optimizer and scheduler settings from ``cfg``.
* ``add_and_assert_specific_cfg(cfg)``: fills defaults and checks keys. Methods override it as a
  **classmethod** calling ``super().add_and_assert_specific_cfg(cfg)`` (a classmethod, unlike
  solo-learn's staticmethods, so that ``super()`` follows the composed class's MRO).
* ``learnable_params``: list of optimizer parameter groups (dicts with ``name`` and ``params``;
  optional ``lr``, ``weight_decay``, ``static_lr``).
* ``forward(X)`` -> ``{"feats", "logits"}``; ``multicrop_forward(X)`` -> ``{"feats"}``. Methods
  extend these dicts (e.g. with the projection ``"z"``).
* ``training_step(batch, batch_idx)``: all same-size crops go through ``forward`` in **one** call
  (``hosts/multiview_step.py``); returns per-crop lists (``outs["z"][k]`` is crop ``k``) and
  ``outs["loss"]``, the online classifier's loss, to which the method adds its own. A method
  that writes its own step (mttv) reuses the step's bookkeeping:
  ``log_classifier_metrics(out, prefix)`` and ``update_online_knn(feats, targets)``.
* Momentum hosts add ``self.momentum_backbone`` (EMA copy), ``momentum_forward(X)``,
  ``momentum_pairs`` (``(online, target)`` module pairs updated after each optimizer step with
  ``target = tau * target + (1 - tau) * online``), ``self.momentum_updater`` (``cur_tau``,
  cosine schedule ``momentum.base_tau`` -> ``momentum.final_tau``), and per-crop
  ``outs["momentum_<key>"]`` lists from ``training_step``.
"""

from __future__ import annotations


class BaseMethod:
    """Marker base for K-view methods; the host's base class is placed behind it.

    ``data_pipeline`` names the training data a method needs: ``multicrop`` (K augmented crops
    per image, ``data/augmentations.py``) or ``mttv_pairs`` (anchor/partner views,
    ``data/pairing.py``)."""

    host_kind = "base"
    data_pipeline = "multicrop"


class BaseMomentumMethod(BaseMethod):
    """Marker base for K-view methods with an EMA target network."""

    host_kind = "momentum"
