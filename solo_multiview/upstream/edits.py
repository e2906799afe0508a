"""Edits of solo-learn's own files (at the commit the README pins, 9187ea3), by anchor.

Every edit is an exact ``old`` -> ``new`` replacement of text that occurs once in the file. An
edit is idempotent: a file that already holds ``new`` is left as it is, so writing the
contribution twice changes nothing. A missing anchor stops the command and names the file and
the text it expected (a checkout at another commit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Sequence

from .source import ExportError


@dataclass(frozen=True)
class Edit:
    path: str  # relative to the checkout
    old: str
    new: str
    why: str = ""
    #: text whose presence means the edit is applied (default: ``new``)
    present: str = ""


def apply_edits(files: Dict[str, str], edits: Sequence[Edit]) -> Dict[str, str]:
    """Apply ``edits`` to the texts in ``files`` (path -> text, updated in place and returned)."""
    for edit in edits:
        text = files[edit.path]
        if (edit.present or edit.new) in text:
            continue
        count = text.count(edit.old)
        if count != 1:
            raise ExportError(
                f"{edit.path}: expected this text once ({count} found); is the checkout at "
                f"solo-learn 9187ea3?\n--- expected ---\n{edit.old}"
            )
        files[edit.path] = text.replace(edit.old, edit.new)
    return files


def insert_before(path: str, anchor: str, lines: Sequence[str], why: str = "") -> List[Edit]:
    """Insert each line before ``anchor`` (one edit per line, so each is idempotent)."""
    return [Edit(path, anchor, line + anchor, why, present=line) for line in lines]


# --------------------------------------------------------------------------- methods
BASE_METHOD = Edit(
    "solo/methods/base.py",
    "class BaseMethod(pl.LightningModule):\n    _BACKBONES = {\n",
    "class BaseMethod(pl.LightningModule):\n"
    "    # methods that train on more than two large crops set this to True\n"
    "    # (main_pretrain.py refuses data.num_large_crops != 2 for the others)\n"
    "    supports_multiple_large_crops: bool = False\n"
    "    # methods that pair every image with partner images set this to True: the training set\n"
    "    # is then wrapped in solo.data.pretrain_dataloader.PartnerPairDataset (e.g. MTTV)\n"
    "    uses_partner_pairs: bool = False\n"
    "\n"
    "    _BACKBONES = {\n",
    "the two class attributes a method declares its views with",
)

MULTI_CROP_METHODS = [
    Edit(
        "solo/methods/wmse.py",
        "class WMSE(BaseMethod):\n    def __init__",
        "class WMSE(BaseMethod):\n    supports_multiple_large_crops = True\n\n    def __init__",
        "W-MSE was allowed K large crops by name in main_pretrain.py",
    ),
    Edit(
        "solo/methods/mae.py",
        "class MAE(BaseMethod):\n    def __init__",
        "class MAE(BaseMethod):\n    supports_multiple_large_crops = True\n\n    def __init__",
        "MAE was allowed K large crops by name in main_pretrain.py",
    ),
]


def registration_edits(methods: Sequence[dict]) -> List[Edit]:
    """solo/methods/__init__.py and solo/losses/__init__.py entries of the written methods
    (``methods``: dicts with module, cls, loss_functions)."""
    edits: List[Edit] = []
    mpath, lpath = "solo/methods/__init__.py", "solo/losses/__init__.py"
    for m in methods:
        edits += insert_before(
            mpath,
            "from solo.methods.nnbyol import NNBYOL\n",
            [f"from solo.methods.{m['module']} import {m['cls']}\n"],
        )
        edits += insert_before(
            mpath, '    "nnbyol": NNBYOL,\n', [f'    "{m["name"]}": {m["cls"]},\n']
        )
        edits += insert_before(mpath, '    "NNBYOL",\n', [f'    "{m["cls"]}",\n'])
        for fn in m["loss_functions"]:
            edits += insert_before(
                lpath,
                "from solo.losses.nnclr import nnclr_loss_func\n",
                [f"from solo.losses.{m['module']} import {fn}\n"],
            )
            edits += insert_before(lpath, '    "nnclr_loss_func",\n', [f'    "{fn}",\n'])
    return edits


# --------------------------------------------------------------------------- main_pretrain.py
MAIN_PRETRAIN = [
    Edit(
        "main_pretrain.py",
        "    NCropAugmentation,\n    build_transform_pipeline,\n",
        "    NCropAugmentation,\n    PartnerPairDataset,\n    build_normalization_pipeline,\n"
        "    build_transform_pipeline,\n",
    ),
    Edit(
        "main_pretrain.py",
        '    if cfg.data.num_large_crops != 2:\n        assert cfg.method in ["wmse", "mae"]\n',
        "    # methods declare whether they train on more than two large crops (BaseMethod)\n"
        "    if cfg.data.num_large_crops != 2:\n"
        '        assert getattr(METHODS[cfg.method], "supports_multiple_large_crops", False), (\n'
        '            f"{cfg.method} trains on exactly 2 large crops, got '
        '{cfg.data.num_large_crops}; "\n'
        '            "methods that take more set supports_multiple_large_crops = True"\n'
        "        )\n",
        "the hard-coded list becomes a declaration of the method",
    ),
    Edit(
        "main_pretrain.py",
        "            data_fraction=cfg.data.fraction,\n            dali_device=cfg.dali.device,\n",
        "            data_fraction=cfg.data.fraction,\n            long_tail=cfg.data.long_tail,\n"
        "            dali_device=cfg.dali.device,\n",
    ),
    Edit(
        "main_pretrain.py",
        """    else:
        pipelines = []
        for aug_cfg in cfg.augmentations:
            pipelines.append(
                NCropAugmentation(
                    build_transform_pipeline(cfg.data.dataset, aug_cfg), aug_cfg.num_crops
                )
            )
        transform = FullTransformPipeline(pipelines)

        if cfg.debug_augmentations:
            print("Transforms:")
            print(transform)

        train_dataset = prepare_datasets(
            cfg.data.dataset,
            transform,
            train_data_path=cfg.data.train_path,
            data_format=cfg.data.format,
            no_labels=cfg.data.no_labels,
            data_fraction=cfg.data.fraction,
        )
""",
        """    else:
        partner_pairs = getattr(METHODS[cfg.method], "uses_partner_pairs", False)
        if partner_pairs:
            # every image is paired with partner images and each pair gives normalised and
            # augmented views of both (MTTV): the dataset applies the transformations
            transform = None
            augmentation = build_transform_pipeline(cfg.data.dataset, cfg.augmentations[0])
            normalization = build_normalization_pipeline(cfg.data.dataset, cfg.augmentations[0])
        else:
            pipelines = []
            for aug_cfg in cfg.augmentations:
                pipelines.append(
                    NCropAugmentation(
                        build_transform_pipeline(cfg.data.dataset, aug_cfg), aug_cfg.num_crops
                    )
                )
            transform = FullTransformPipeline(pipelines)

        if cfg.debug_augmentations:
            print("Transforms:")
            print(f"{augmentation}\\n{normalization}" if partner_pairs else transform)

        train_dataset = prepare_datasets(
            cfg.data.dataset,
            transform,
            train_data_path=cfg.data.train_path,
            data_format=cfg.data.format,
            no_labels=cfg.data.no_labels,
            data_fraction=cfg.data.fraction,
            long_tail=cfg.data.long_tail,
        )
        if partner_pairs:
            # method_kwargs defaults were set by the method's add_and_assert_specific_cfg
            train_dataset = PartnerPairDataset(
                train_dataset,
                augmentation=augmentation,
                normalization=normalization,
                num_pairs=cfg.method_kwargs.num_views,
                partner=cfg.method_kwargs.partner,
                views=cfg.method_kwargs.views,
            )
""",
        "partner pairs and the long-tailed subset in the torchvision pipeline",
    ),
]


# --------------------------------------------------------------------------- solo/args/pretrain.py
def args_edits(long_tail_lines: Sequence[str]) -> List[Edit]:
    """``data.long_tail`` defaults/checks (lines generated from the plugin's LongTailConfig)
    and the partner-pair checks."""
    path = "solo/args/pretrain.py"
    body = "".join(f"        {line}\n" if line else "\n" for line in long_tail_lines)
    return [
        Edit(
            path,
            "from solo.utils.auto_resumer import AutoResumer\n",
            "from solo.data.long_tail import PROFILES as _LONG_TAIL_PROFILES\n"
            "from solo.methods import METHODS\n"
            "from solo.utils.auto_resumer import AutoResumer\n",
        ),
        Edit(
            path,
            '    cfg.data.fraction = omegaconf_select(cfg, "data.fraction", -1)\n',
            '    cfg.data.fraction = omegaconf_select(cfg, "data.fraction", -1)\n'
            "    # long-tailed subset of the training set (solo.data.long_tail), off by default\n"
            '    cfg.data.long_tail = omegaconf_select(cfg, "data.long_tail", None)\n'
            "    if cfg.data.long_tail is not None:\n"
            + body
            + "        assert cfg.data.long_tail.profile in _LONG_TAIL_PROFILES\n"
            '        assert not cfg.data.no_labels, "data.long_tail needs labels"\n'
            '        assert cfg.data.fraction <= 0, "use data.long_tail or data.fraction"\n'
            '        assert cfg.data.dataset != "stl10", "data.long_tail needs labelled data"\n',
        ),
        Edit(
            path,
            "    cfg.data.num_large_crops = num_large_crops\n"
            "    cfg.data.num_small_crops = num_small_crops\n",
            "    cfg.data.num_large_crops = num_large_crops\n"
            "    cfg.data.num_small_crops = num_small_crops\n"
            "\n"
            "    # methods that pair images with partner images (e.g. MTTV) make their views from"
            " one\n"
            "    # augmentation entry, in the torchvision data pipeline\n"
            '    if getattr(METHODS.get(cfg.method), "uses_partner_pairs", False):\n'
            "        assert (\n"
            "            len(cfg.augmentations) == 1\n"
            '        ), f"{cfg.method} takes one augmentation entry, got '
            '{len(cfg.augmentations)}"\n'
            '        assert cfg.data.format != "dali", (\n'
            '            f"{cfg.method} pairs images with partner images, which the DALI '
            'pipeline "\n'
            '            "does not implement: use data.format=image_folder"\n'
            "        )\n",
        ),
    ]


# --------------------------------------------------------------------------- data
def pretrain_dataloader_edits(text: str, pair_dataset: str) -> List[Edit]:
    """``MEANS_N_STD`` moved to the module (shared by the normalisation pipeline), the
    ``long_tail`` argument of prepare_datasets, the partner-pair dataset."""
    path = "solo/data/pretrain_dataloader.py"
    edits = [
        Edit(
            path,
            "from typing import Callable, List, Optional, Sequence, Type, Union\n",
            "from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Type, "
            "Union\n",
        ),
        Edit(
            path,
            "import torch\nimport torchvision\n",
            "import omegaconf\nimport torch\nimport torchvision\n",
        ),
        Edit(
            path,
            "from torchvision.datasets import STL10, ImageFolder\n",
            "from torchvision.datasets import STL10, ImageFolder\n\n"
            "from solo.data.long_tail import long_tail_subset\n",
        ),
    ]
    match = re.search(r"\n    MEANS_N_STD = \{\n(?:        .*\n)+?    \}\n\n", text)
    if match is not None:
        block = match.group(0)
        module_level = "\n".join(
            line[4:] if line.startswith("    ") else line for line in block.strip("\n").split("\n")
        )
        edits.append(Edit(path, block, "\n"))
        edits.append(
            Edit(
                path,
                "\n\ndef build_transform_pipeline(dataset, cfg):\n",
                f"\n\n{module_level}\n\n\ndef build_transform_pipeline(dataset, cfg):\n",
            )
        )
    elif "\nMEANS_N_STD = {\n" not in text:
        raise ExportError(f"{path}: MEANS_N_STD not found in build_transform_pipeline")
    edits += [
        Edit(
            path,
            "    data_fraction: float = -1.0,\n) -> Dataset:\n",
            "    data_fraction: float = -1.0,\n"
            "    long_tail: Optional[Mapping[str, Any]] = None,\n) -> Dataset:\n",
        ),
        Edit(
            path,
            "        data_fraction (Optional[float]): percentage of data to use. Use all data when"
            " set to -1.0.\n            Defaults to -1.0.\n    Returns:\n"
            "        Dataset: the desired dataset with transformations.\n",
            "        data_fraction (Optional[float]): percentage of data to use. Use all data when"
            " set to -1.0.\n            Defaults to -1.0.\n"
            "        long_tail (Optional[Mapping[str, Any]]): the data.long_tail node: keeps the\n"
            "            long-tailed subset it selects (solo.data.long_tail). Defaults to None.\n"
            "    Returns:\n        Dataset: the desired dataset with transformations.\n",
        ),
        Edit(
            path,
            "    if data_fraction > 0:\n",
            "    if long_tail is not None:\n"
            "        train_dataset = long_tail_subset(train_dataset, long_tail)\n\n"
            "    if data_fraction > 0:\n",
        ),
        Edit(
            path,
            "        drop_last=True,\n    )\n    return train_loader\n",
            "        drop_last=True,\n    )\n    return train_loader\n" + pair_dataset,
        ),
    ]
    return edits


DALI = [
    Edit(
        "solo/data/dali_dataloader.py",
        "from typing import Callable, List, Optional, Union\n",
        "from typing import Any, Callable, List, Mapping, Optional, Union\n",
    ),
    Edit(
        "solo/data/dali_dataloader.py",
        "from solo.data.temp_dali_fix import TempDALIGenericIterator\n",
        "from solo.data.long_tail import long_tail_files\n"
        "from solo.data.temp_dali_fix import TempDALIGenericIterator\n",
    ),
    Edit(
        "solo/data/dali_dataloader.py",
        "        data_fraction: float = -1.0,\n    ):\n"
        '        """Builder for a pretrain pipeline with Nvidia DALI.\n',
        "        data_fraction: float = -1.0,\n"
        "        long_tail: Optional[Mapping[str, Any]] = None,\n    ):\n"
        '        """Builder for a pretrain pipeline with Nvidia DALI.\n',
    ),
    Edit(
        "solo/data/dali_dataloader.py",
        "            data_fraction (float): percentage of data to use. Use all data when set to"
        " -1.\n"
        "                Defaults to -1.\n"
        '        """\n',
        "            data_fraction (float): percentage of data to use. Use all data when set to"
        " -1.\n"
        "                Defaults to -1.\n"
        "            long_tail (Optional[Mapping[str, Any]]): the data.long_tail node: keeps the\n"
        "                long-tailed subset of the files it selects. Defaults to None.\n"
        '        """\n',
    ),
    Edit(
        "solo/data/dali_dataloader.py",
        "        if encode_indexes_into_labels:\n            encoded_labels = []\n",
        "        if long_tail is not None:\n"
        '            assert not no_labels, "data.long_tail needs labels"\n'
        "            files, labels = long_tail_files(files, labels, long_tail)\n\n"
        "        if encode_indexes_into_labels:\n            encoded_labels = []\n",
    ),
    Edit(
        "solo/data/dali_dataloader.py",
        "        encode_indexes_into_labels: bool = False,\n    ):\n"
        '        """DataModule for pretrain data using Nvidia DALI.\n',
        "        encode_indexes_into_labels: bool = False,\n"
        "        long_tail: Optional[Mapping[str, Any]] = None,\n    ):\n"
        '        """DataModule for pretrain data using Nvidia DALI.\n',
    ),
    Edit(
        "solo/data/dali_dataloader.py",
        "                together with labels. Allows user to access the true instance index.\n"
        "                Defaults to False.\n\n"
        '        """\n',
        "                together with labels. Allows user to access the true instance index.\n"
        "                Defaults to False.\n"
        "            long_tail (Optional[Mapping[str, Any]]): the data.long_tail node: keeps the\n"
        "                long-tailed subset of the training files it selects. Defaults to None.\n\n"
        '        """\n',
    ),
    Edit(
        "solo/data/dali_dataloader.py",
        "        # hack to encode image indexes into the labels\n"
        "        self.encode_indexes_into_labels = encode_indexes_into_labels\n",
        "        # hack to encode image indexes into the labels\n"
        "        self.encode_indexes_into_labels = encode_indexes_into_labels\n"
        "        self.long_tail = long_tail\n",
    ),
    Edit(
        "solo/data/dali_dataloader.py",
        "            encode_indexes_into_labels=self.encode_indexes_into_labels,\n"
        "            data_fraction=self.data_fraction,\n        )\n",
        "            encode_indexes_into_labels=self.encode_indexes_into_labels,\n"
        "            data_fraction=self.data_fraction,\n            long_tail=self.long_tail,\n"
        "        )\n",
    ),
]


# --------------------------------------------------------------------------- docs, README
def docs_edits(methods: Sequence[dict]) -> List[Edit]:
    path = "docs/source/index.rst"
    edits: List[Edit] = []
    for m in methods:
        edits += insert_before(
            path, "   solo/methods/nnbyol\n", [f"   solo/methods/{m['module']}\n"]
        )
        edits += insert_before(path, "   solo/losses/nnclr\n", [f"   solo/losses/{m['module']}\n"])
    edits += insert_before(path, "   solo/losses/nnclr\n", ["   solo/losses/multiview_utils\n"])
    return edits


def readme_edits(methods: Sequence[dict]) -> List[Edit]:
    edits: List[Edit] = []
    for m in methods:
        edits += insert_before(
            "README.md", "* [NNBYOL](https://arxiv.org/abs/2104.14548)\n", [m["readme_line"] + "\n"]
        )
    edits.append(
        Edit(
            "README.md",
            "* Flexible augmentations.\n",
            "* Flexible augmentations.\n"
            "* Long-tailed subsets of CIFAR and image folders (`data.long_tail`: exponential, step"
            " or Pareto profiles, or an index file).\n",
        )
    )
    return edits
