"""Contributing upstream: a solo-learn pull request generated from this project's own code.

``python -m solo_multiview.upstream /path/to/solo-learn [--methods mttv mv_simclr]`` writes into a
solo-learn checkout (vturrisi/solo-learn at 9187ea3, the commit the README pins), in solo-learn's
layout and conventions:

- ``solo/losses/<method>.py``: the plugin's pure-torch loss module, transformed by source
  (:mod:`.source`): its relative imports point at ``solo/losses/multiview_utils.py``, assembled
  from ``losses/_common.py``, ``losses/distributed.py`` and ``losses/band_filter.py``; the loss is
  named ``<method>_loss_func``; docstrings in solo-learn's style; solo-learn's licence header;
- ``solo/methods/<method>.py``: a class on solo-learn's ``BaseMethod`` / ``BaseMomentumMethod``
  (:mod:`.templates`), whose config defaults, checks and documented keys are generated from the
  method's ``Kwargs`` (and ``Momentum``) dataclass; the registrations in
  ``solo/methods/__init__.py`` and ``solo/losses/__init__.py``;
- the data side: ``solo/data/long_tail.py`` (the plugin's ``data/longtail.py``, transformed) and
  ``data.long_tail`` in ``solo/args/pretrain.py``, ``prepare_datasets`` and the DALI pretrain
  pipeline; MTTV's partner pairs (``PartnerPairDataset``, ``build_normalization_pipeline``) in
  ``solo/data/pretrain_dataloader.py`` and ``main_pretrain.py`` (refused with DALI);
- ``BaseMethod.supports_multiple_large_crops``, read by ``main_pretrain.py`` instead of its
  hard-coded ``["wmse", "mae"]``, so the new methods run at K > 2 from solo-learn's entry point;
- configs (``scripts/pretrain/cifar/<method>.yaml``, ``<method>_lt.yaml``, their augmentation
  file), tests (``tests/losses``, ``tests/methods``, ``tests/data``), docs pages and README lines;
- ``PULL_REQUEST.md``: the description (what, why, results, how tested) with the diff stat.

Edits of existing solo-learn files are anchored (:mod:`.edits`) and idempotent.
"""

from .methods import LEFT_OUT, SUPPORTED
from .source import ExportError
from .writer import Report, write_contribution

__all__ = ["ExportError", "LEFT_OUT", "Report", "SUPPORTED", "write_contribution"]
