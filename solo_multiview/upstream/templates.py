"""The solo-learn files that are written, not transformed: method classes, tests, docs pages.

``$name`` fields are filled by :mod:`.methods` from the project's own declarations (the
method's ``Kwargs`` dataclass, its docstring, its momentum defaults), so the defaults, checks and
documented keys of a written method are the plugin's; the class bodies follow
solo/methods/simclr.py and solo/methods/byol.py (``add_and_assert_specific_cfg`` as a
staticmethod, ``learnable_params``, ``forward``, ``multicrop_forward``, ``training_step``).
"""

from string import Template

MTTV_METHOD = Template(
    '''$header

from typing import Any, Dict, List, Optional, Sequence, Tuple

import omegaconf
import torch
import torch.nn as nn
from solo.losses.mttv import mttv_loss_func
from solo.losses.multiview_utils import BandFilter
from solo.methods.base import BaseMomentumMethod
from solo.utils.misc import omegaconf_select
from solo.utils.momentum import initialize_momentum_params


def mttv_projector(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """MTTV's 3-layer projector, with a BatchNorm after every layer (d -> d -> d / 4 by default).

    Args:
        in_dim (int): input features.
        hidden_dim (int): hidden features.
        out_dim (int): output features.

    Returns:
        nn.Sequential: the projector.
    """

    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.BatchNorm1d(hidden_dim),
        nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
        nn.BatchNorm1d(out_dim),
    )


class MTTV(BaseMomentumMethod):
    # K = method_kwargs.num_views partner images per anchor (main_pretrain.py checks this)
    supports_multiple_large_crops = True
    # the batch holds the four views of every (anchor, partner) pair
    # (solo.data.pretrain_dataloader.PartnerPairDataset)
    uses_partner_pairs = True

    def __init__(self, cfg: omegaconf.DictConfig):
        """Implements MTTV / MIMV (https://arxiv.org/abs/2509.08469).

$description

        Extra cfg settings:
$settings
        """

        super().__init__(cfg)

        self.num_pairs: int = cfg.method_kwargs.num_views
        self.temperature: float = cfg.method_kwargs.temperature
        self.fusion: str = cfg.method_kwargs.fusion
        self.form: str = cfg.method_kwargs.form
        band = cfg.method_kwargs.filter
        self.band: Optional[BandFilter] = (
            BandFilter(band.low, band.high, band.mode) if band.enabled else None
        )

        proj_hidden_dim: int = cfg.method_kwargs.proj_hidden_dim or self.features_dim
        proj_output_dim: int = cfg.method_kwargs.proj_output_dim or self.features_dim // 4

        # projector
        self.projector = mttv_projector(self.features_dim, proj_hidden_dim, proj_output_dim)

        # momentum projector
        self.momentum_projector = mttv_projector(
            self.features_dim, proj_hidden_dim, proj_output_dim
        )
        initialize_momentum_params(self.projector, self.momentum_projector)

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Adds method specific default values/checks for config.

        Args:
            cfg (omegaconf.DictConfig): DictConfig object.

        Returns:
            omegaconf.DictConfig: same as the argument, used to avoid errors.
        """

        # MTTV's EMA momentum is a constant by default
        cfg.momentum = omegaconf_select(cfg, "momentum", {})
$momentum_settings

        cfg = super(MTTV, MTTV).add_and_assert_specific_cfg(cfg)

$kwargs_settings
        band = cfg.method_kwargs.filter
        BandFilter(band.low, band.high, band.mode)  # checks the band, also when it is off

        assert cfg.data.num_large_crops == cfg.method_kwargs.num_views, (
            "mttv takes one augmentation entry whose num_crops is method_kwargs.num_views "
            f"(K = {cfg.method_kwargs.num_views}), got {cfg.data.num_large_crops} large crops"
        )
        assert cfg.data.num_small_crops == 0, "mttv takes no small crops"

        return cfg

    @property
    def learnable_params(self) -> List[dict]:
        """Adds projector parameters to the parent's learnable parameters.

        Returns:
            List[dict]: list of learnable parameters.
        """

        extra_learnable_params = [{"name": "projector", "params": self.projector.parameters()}]
        return super().learnable_params + extra_learnable_params

    @property
    def momentum_pairs(self) -> List[Tuple[Any, Any]]:
        """Adds (projector, momentum_projector) to the parent's momentum pairs.

        Returns:
            List[Tuple[Any, Any]]: list of momentum pairs.
        """

        extra_momentum_pairs = [(self.projector, self.momentum_projector)]
        return super().momentum_pairs + extra_momentum_pairs

    def forward(self, X: torch.Tensor) -> Dict[str, Any]:
        """Performs the forward pass of the online backbone and projector.

        Args:
            X (torch.Tensor): a batch of images in the tensor format.

        Returns:
            Dict[str, Any]: a dict containing the outputs of the parent and the projected features.
        """

        out = super().forward(X)
        z = self.projector(out["feats"])
        out.update({"z": z})
        return out

    def multicrop_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        """Performs the forward pass of the online backbone and projector without the online
        classifier (used for the partners' augmented views).

        Args:
            X (torch.Tensor): a batch of images in the tensor format.

        Returns:
            Dict[str, Any]: a dict containing the outputs of the parent and the projected features.
        """

        out = super().multicrop_forward(X)
        z = self.projector(out["feats"])
        out.update({"z": z})
        return out

    @torch.no_grad()
    def momentum_forward(self, X: torch.Tensor) -> Dict[str, Any]:
        """Performs the forward pass of the momentum backbone and projector.

        Args:
            X (torch.Tensor): batch of images in tensor format.

        Returns:
            Dict[str, Any]: a dict containing the outputs of
                the parent and the momentum projected features.
        """

        out = super().momentum_forward(X)
        z = self.momentum_projector(out["feats"])
        out.update({"z": z})
        return out

    def fuse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Fuses the embeddings of the two views of a pair (method_kwargs.fusion).

        Args:
            a (torch.Tensor): embeddings of the first view.
            b (torch.Tensor): embeddings of the second view.

        Returns:
            torch.Tensor: their sum, or their concatenation.
        """

        return a + b if self.fusion == "sum" else torch.cat([a, b], dim=1)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """Training step for MTTV.

        Args:
            batch (Sequence[Any]): a batch of data in the format of [img_indexes, [X], Y], where
                [X] is a list of 4 * K batches of images in the order
                [x_n^1..x_n^K, y_a^1..y_a^K, x_a^1..x_a^K, y_n^1..y_n^K]
                (solo.data.pretrain_dataloader.PartnerPairDataset); each group of K is
                concatenated pair-major, so row m of every group belongs to the same pair.
            batch_idx (int): index of the batch.

        Returns:
            torch.Tensor: total loss composed of the MTTV loss and classification loss.
        """

        _, X, targets = batch
        K = self.num_pairs
        assert len(X) == 4 * K, (
            f"mttv expects 4 * num_views = {4 * K} crops per image (x_n, y_a, x_a, y_n per "
            f"pair), got {len(X)}"
        )
        x_n, y_a, x_a, y_n = (torch.cat(X[i * K : (i + 1) * K]) for i in range(4))
        anchor_targets = targets.repeat(K)

        # online branch: z = g(f(x_n)) (+) g(f(y_a)); the online classifier sees x_n
        anchor = self.base_training_step(x_n, anchor_targets)
        partner = self.multicrop_forward(y_a)
        # momentum branch: z' = g'(f'(x_a)) (+) g'(f'(y_n))
        target_x = self._shared_step_momentum(x_a, anchor_targets)
        target_y = self.momentum_forward(y_n)

        z_online = self.fuse(anchor["z"], partner["z"])
        z_target = self.fuse(target_x["z"], target_y["z"])

        # ------- filtered InfoNCE -------
        mttv_loss, stats = mttv_loss_func(
            z_online, z_target, temperature=self.temperature, band=self.band, form=self.form
        )

        class_loss = anchor["loss"]
        metrics = {
            "train_mttv_loss": mttv_loss,
            "train_class_loss": anchor["loss"],
            "train_acc1": anchor["acc1"],
            "train_acc5": anchor["acc5"],
            **{f"train_{name}": value for name, value in stats.items()},
        }
        if self.momentum_classifier is not None:
            class_loss = class_loss + target_x["loss"]
            metrics.update(
                {
                    "train_momentum_class_loss": target_x["loss"],
                    "train_momentum_acc1": target_x["acc1"],
                    "train_momentum_acc5": target_x["acc5"],
                }
            )
        self.log_dict(metrics, on_epoch=True, sync_dist=True)

        if self.knn_eval:
            mask = anchor_targets != -1
            self.knn(
                train_features=anchor["feats"][mask].detach(),
                train_targets=anchor_targets[mask],
            )

        return mttv_loss + class_loss
'''
)


MV_SIMCLR_METHOD = Template(
    '''$header

from typing import Any, Dict, List, Optional, Sequence

import omegaconf
import torch
import torch.nn as nn
from solo.losses.multiview_utils import BandFilter
from solo.losses.mv_simclr import mv_simclr_loss_func
from solo.methods.base import BaseMethod
from solo.utils.misc import omegaconf_select


class MVSimCLR(BaseMethod):
    # K = data.num_large_crops views per image (main_pretrain.py checks this)
    supports_multiple_large_crops = True

    def __init__(self, cfg: omegaconf.DictConfig):
        """Implements SimCLR with K views (https://arxiv.org/abs/2002.05709, generalised to K
        views as the multi-positive NT-Xent of https://arxiv.org/abs/2004.11362).

$description

        Extra cfg settings:
$settings
        """

        super().__init__(cfg)

        self.temperature: float = cfg.method_kwargs.temperature
        band = cfg.method_kwargs.filter
        self.band: Optional[BandFilter] = (
            BandFilter(band.low, band.high, band.mode) if band.enabled else None
        )

        proj_hidden_dim: int = cfg.method_kwargs.proj_hidden_dim
        proj_output_dim: int = cfg.method_kwargs.proj_output_dim

        # projector
        self.projector = nn.Sequential(
            nn.Linear(self.features_dim, proj_hidden_dim),
            nn.ReLU(),
            nn.Linear(proj_hidden_dim, proj_output_dim),
        )

    @staticmethod
    def add_and_assert_specific_cfg(cfg: omegaconf.DictConfig) -> omegaconf.DictConfig:
        """Adds method specific default values/checks for config.

        Args:
            cfg (omegaconf.DictConfig): DictConfig object.

        Returns:
            omegaconf.DictConfig: same as the argument, used to avoid errors.
        """

        cfg = super(MVSimCLR, MVSimCLR).add_and_assert_specific_cfg(cfg)

$kwargs_settings
        band = cfg.method_kwargs.filter
        BandFilter(band.low, band.high, band.mode)  # checks the band, also when it is off

        # K has one name: it is the number of large crops the augmentations make
        cfg.method_kwargs.num_views = omegaconf_select(
            cfg, "method_kwargs.num_views", cfg.data.num_large_crops
        )
        assert cfg.method_kwargs.num_views == cfg.data.num_large_crops, (
            f"method_kwargs.num_views ({cfg.method_kwargs.num_views}) must equal the number of "
            f"large crops of the augmentations ({cfg.data.num_large_crops})"
        )
        assert cfg.method_kwargs.num_views >= $min_views

        return cfg

    @property
    def learnable_params(self) -> List[dict]:
        """Adds projector parameters to the parent's learnable parameters.

        Returns:
            List[dict]: list of learnable parameters.
        """

        extra_learnable_params = [{"name": "projector", "params": self.projector.parameters()}]
        return super().learnable_params + extra_learnable_params

    def forward(self, X: torch.tensor) -> Dict[str, Any]:
        """Performs the forward pass of the backbone and the projector.

        Args:
            X (torch.Tensor): a batch of images in the tensor format.

        Returns:
            Dict[str, Any]:
                a dict containing the outputs of the parent
                and the projected features.
        """

        out = super().forward(X)
        z = self.projector(out["feats"])
        out.update({"z": z})
        return out

    def multicrop_forward(self, X: torch.tensor) -> Dict[str, Any]:
        """Performs the forward pass for the multicrop views.

        Args:
            X (torch.Tensor): batch of images in tensor format.

        Returns:
            Dict[]: a dict containing the outputs of the parent
                and the projected features.
        """

        out = super().multicrop_forward(X)
        z = self.projector(out["feats"])
        out.update({"z": z})
        return out

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> torch.Tensor:
        """Training step for K-view SimCLR reusing BaseMethod training step.

        Args:
            batch (Sequence[Any]): a batch of data in the format of [img_indexes, [X], Y], where
                [X] is a list of size num_crops containing batches of images.
            batch_idx (int): index of the batch.

        Returns:
            torch.Tensor: total loss composed of the K-view SimCLR loss and classification loss.
        """

        indexes = batch[0]

        out = super().training_step(batch, batch_idx)
        class_loss = out["loss"]
        z = torch.cat(out["z"])

        # ------- multi-positive contrastive loss over all crops -------
        n_augs = self.num_large_crops + self.num_small_crops
        indexes = indexes.repeat(n_augs)

        nce_loss, stats = mv_simclr_loss_func(
            z, indexes, temperature=self.temperature, band=self.band
        )

        metrics = {"train_nce_loss": nce_loss}
        if self.band is not None:
            metrics["train_filtered_fraction"] = stats["filtered_fraction"]
        self.log_dict(metrics, on_epoch=True, sync_dist=True)

        return nce_loss + class_loss
'''
)


LONG_TAIL_DATASET = '''

def long_tail_subset(train_dataset: Dataset, long_tail: Mapping[str, Any]) -> Dataset:
    """Keeps the long-tailed subset of a labelled training set that ``data.long_tail`` selects
    (:func:`long_tail_indexes`), in place, so the dataset's indexes stay positions in the
    long-tailed set. Works for the in-memory CIFAR datasets (``data`` / ``targets``) and for
    ``ImageFolder`` datasets (``samples`` / ``targets``).

    Args:
        train_dataset (Dataset): a torchvision CIFAR10 / CIFAR100 or ImageFolder dataset.
        long_tail (Mapping[str, Any]): the ``data.long_tail`` node.

    Returns:
        Dataset: the same dataset, restricted to the long-tailed subset.
    """

    targets = np.asarray(train_dataset.targets, dtype=np.int64)
    keep = long_tail_indexes(targets, len(train_dataset.classes), long_tail)
    if hasattr(train_dataset, "data"):
        train_dataset.data = train_dataset.data[keep]
    elif hasattr(train_dataset, "samples"):
        train_dataset.samples = [train_dataset.samples[i] for i in keep]
        if hasattr(train_dataset, "imgs"):
            train_dataset.imgs = train_dataset.samples
    else:
        raise ValueError(
            f"data.long_tail: {type(train_dataset).__name__} has neither data nor samples"
        )
    train_dataset.targets = targets[keep].tolist()
    return train_dataset


def long_tail_files(
    files: Sequence[Any], labels: Sequence[int], long_tail: Mapping[str, Any]
) -> Tuple[List[Any], List[int]]:
    """The long-tailed subset of a list of files and labels (for the DALI pipelines).

    Args:
        files (Sequence[Any]): the image files.
        labels (Sequence[int]): their labels, ``0..C-1``.
        long_tail (Mapping[str, Any]): the ``data.long_tail`` node.

    Returns:
        Tuple[List[Any], List[int]]: the kept files and labels.
    """

    targets = np.asarray(labels, dtype=np.int64)
    keep = long_tail_indexes(targets, int(targets.max()) + 1, long_tail)
    return [files[i] for i in keep], targets[keep].tolist()
'''


PAIR_DATASET = '''

def build_normalization_pipeline(dataset: str, cfg: omegaconf.DictConfig) -> Callable:
    """The normalised-only view of an augmentation entry: resize and centre crop to the entry's
    ``crop_size`` (images of that size are left as they are), to tensor, normalised with the same
    mean and std as :func:`build_transform_pipeline`. Used for MTTV's "normalised" views.

    Args:
        dataset (str): the name of the dataset.
        cfg (omegaconf.DictConfig): an augmentation entry (only crop_size, mean and std are read).

    Returns:
        Callable: the transformation.
    """

    mean, std = MEANS_N_STD.get(
        dataset, (cfg.get("mean", IMAGENET_DEFAULT_MEAN), cfg.get("std", IMAGENET_DEFAULT_STD))
    )
    return transforms.Compose(
        [
            transforms.Resize(cfg.crop_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(cfg.crop_size),
            transforms.ToTensor(),
            transforms.Normalize(mean=mean, std=std),
        ]
    )


class PartnerPairDataset(Dataset):
    def __init__(
        self,
        dataset: Dataset,
        augmentation: Callable,
        normalization: Callable,
        num_pairs: int = 1,
        partner: str = "image",
        views: str = "normalized_augmented",
    ):
        """Pairs every image with ``num_pairs`` partner images, as MTTV / MIMV does
        (https://arxiv.org/abs/2509.08469).

        For the anchor ``x`` at position ``i``, K partners ``y^1..y^K`` are drawn uniformly, with
        replacement, from the whole training set (so a partner's class follows the long-tailed
        class frequencies, and may be ``x`` itself), with torch's random generator (seeded per
        data loader worker, like the augmentations). Each pair gives four views: ``x_n``,
        ``y_n`` normalised only and ``x_a``, ``y_a`` augmented. An item is
        ``(i, [x_n^1..x_n^K, y_a^1..y_a^K, x_a^1..x_a^K, y_n^1..y_n^K], target of x)``.

        Args:
            dataset (Dataset): a dataset built with ``dataset_with_index`` and no transform
                (items ``(index, PIL image, target)``).
            augmentation (Callable): the augmentation pipeline (build_transform_pipeline).
            normalization (Callable): the normalisation pipeline (build_normalization_pipeline).
            num_pairs (int, optional): K, partner images per anchor. Defaults to 1.
            partner (str, optional): "image" (a random partner) or "none" (``y = x``: one
                image, SimCLR with an EMA target). Defaults to "image".
            views (str, optional): "normalized_augmented", or "augmented_augmented" to augment
                the normalised views too. Defaults to "normalized_augmented".
        """

        assert num_pairs >= 1, f"num_pairs must be at least 1, got {num_pairs}"
        assert partner in ["image", "none"], f"unknown partner {partner}"
        assert views in ["normalized_augmented", "augmented_augmented"], f"unknown views {views}"

        self.dataset = dataset
        self.augmentation = augmentation
        self.normalization = augmentation if views == "augmented_augmented" else normalization
        self.num_pairs = num_pairs
        self.partner = partner

    @property
    def targets(self) -> List[int]:
        return self.dataset.targets

    def __len__(self) -> int:
        return len(self.dataset)

    def partner_indexes(self, index: int) -> List[int]:
        """Draws the K partner positions of item ``index``.

        Args:
            index (int): position of the anchor.

        Returns:
            List[int]: the partners' positions.
        """

        if self.partner == "none":
            return [index] * self.num_pairs
        return torch.randint(len(self.dataset), (self.num_pairs,)).tolist()

    def __getitem__(self, index: int) -> Tuple[int, List[torch.Tensor], int]:
        index, x, target = self.dataset[index]
        partners = [
            x if j == index else self.dataset[j][1] for j in self.partner_indexes(index)
        ]
        x_n = [self.normalization(x) for _ in partners]
        y_a = [self.augmentation(y) for y in partners]
        x_a = [self.augmentation(x) for _ in partners]
        y_n = [self.normalization(y) for y in partners]
        return index, x_n + y_a + x_a + y_n, target
'''


METHOD_DOC = Template(
    """$title
$underline


.. automethod:: solo.methods.$module.$cls.__init__
   :noindex:

add_and_assert_specific_cfg
~~~~~~~~~~~~~~~~~~~~~~~~~~~
.. automethod:: solo.methods.$module.$cls.add_and_assert_specific_cfg
   :noindex:

learnable_params
~~~~~~~~~~~~~~~~
.. autoattribute:: solo.methods.$module.$cls.learnable_params
   :noindex:

forward
~~~~~~~
.. automethod:: solo.methods.$module.$cls.forward
   :noindex:

multicrop_forward
~~~~~~~~~~~~~~~~~
.. automethod:: solo.methods.$module.$cls.multicrop_forward
   :noindex:
$extra
training_step
~~~~~~~~~~~~~
.. automethod:: solo.methods.$module.$cls.training_step
   :noindex:
"""
)

MOMENTUM_DOC_EXTRA = """
momentum_pairs
~~~~~~~~~~~~~~
.. autoattribute:: solo.methods.$module.$cls.momentum_pairs
   :noindex:

momentum_forward
~~~~~~~~~~~~~~~~
.. automethod:: solo.methods.$module.$cls.momentum_forward
   :noindex:
"""

LOSS_DOC = Template(
    """$title
$underline

.. automodule:: solo.losses.$module
   :noindex:

.. autofunction:: solo.losses.$module.$function
   :noindex:
"""
)

HELPERS_DOC = Template(
    """Multi-view loss helpers
-----------------------

.. autoclass:: solo.losses.multiview_utils.BandFilter
   :members: keep
   :noindex:

.. autofunction:: solo.losses.multiview_utils.global_weighted_mean
   :noindex:
"""
)
