"""Exact values and whole messages of the evaluation core (metrics, groups, feature batches,
feature cache, checkpoint loading), each checked against a hand-computed reference."""

import json
import warnings

import numpy as np
import pytest
import torch
import torch.serialization
from torch import nn

from solo_multiview.eval.checkpoint import backbone_state_dict, load_args, load_pretrained_backbone
from solo_multiview.eval.feature_cache import load_cached
from solo_multiview.eval.features import extract_features
from solo_multiview.eval.groups import as_counts, group_classes, thirds_groups, threshold_groups
from solo_multiview.eval.metrics import (
    flatten_report,
    group_accuracies,
    long_tail_report,
    per_class_accuracy,
    topk_accuracy,
)
from solo_multiview.hosts.backbones import build_backbone

CONVNET = {"name": "convnet", "kwargs": {"width": 4, "depth": 2}}
ARGS = {"backbone": CONVNET, "data": {"dataset": "digits"}}


def save_as_if_from_gpu(monkeypatch, obj, path):
    """``torch.save`` with every storage tagged ``cuda:0``, as a GPU run writes it: loading it on
    a CPU-only machine works only with ``map_location="cpu"``."""
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(obj, path)


# --- metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 3), (3, 0)])
def test_empty_scores_rejected_with_their_shape(shape):
    targets = torch.zeros(shape[0], dtype=torch.long)
    with pytest.raises(ValueError) as info:
        topk_accuracy(torch.zeros(shape), targets, 1)
    assert str(info.value) == f"scores: expected a non-empty (N, C) tensor, got shape {shape}"


def test_targets_shape_mismatch_names_the_number_of_rows():
    with pytest.raises(ValueError) as info:
        topk_accuracy(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), 1)
    assert str(info.value) == "targets: expected shape (2,) to match scores, got (3,)"


def test_top2_counts_the_runner_up():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.06], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    targets = torch.tensor([2, 1, 2, 2])
    # top-2 sets by hand: {1, 2}, {0, 2}, {2, 1}, {0, 1}: rows 0 and 2 hit
    assert topk_accuracy(scores, targets, 2) == 50.0
    # argmax: 1, 0, 2, 0: only row 2 hits
    assert topk_accuracy(scores, targets, 1) == 25.0


def test_per_class_accuracy_absent_class_is_nan_without_warnings():
    scores = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    targets = torch.tensor([0, 0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 division for the class without test images
        acc, counts = per_class_accuracy(scores, targets)
    np.testing.assert_array_equal(acc, [50.0, 0.0, np.nan])
    np.testing.assert_array_equal(counts, [2, 1, 0])
    assert counts.dtype == np.int64  # test image counts are integers


def test_group_accuracies_average_float32_inputs_in_float64():
    acc32 = np.array([100 / 3, 200 / 3, 100 / 7, 300 / 7, 10.1, 20.3], dtype=np.float32)
    grouping = thirds_groups([60, 50, 40, 30, 20, 10])  # groups 0 0 1 1 2 2
    accs, std = group_accuracies(acc32, grouping)
    a = acc32.astype(np.float64).tolist()
    ref = [(a[0] + a[1]) / 2, (a[2] + a[3]) / 2, (a[4] + a[5]) / 2]
    assert accs.tolist() == ref  # a float32 mean differs from these in the last digits
    mean = sum(ref) / 3
    assert std == pytest.approx(np.sqrt(sum((r - mean) ** 2 for r in ref) / 3), rel=1e-12)


def test_group_accuracies_without_any_test_image_is_nan_without_warnings():
    grouping = thirds_groups([3, 2, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no std of an empty array
        accs, std = group_accuracies(np.full(3, np.nan), grouping)
    assert np.isnan(accs).all()
    assert np.isnan(std)


def test_group_accuracies_shape_mismatch_message():
    grouping = thirds_groups([3, 2, 1])
    with pytest.raises(ValueError) as info:
        group_accuracies(np.zeros(4), grouping)
    assert str(info.value) == ("per_class_acc: expected shape (3,) to match the grouping, got (4,)")


def test_long_tail_report_passes_threshold_bounds_and_params():
    # counts 50 30 10 5 with many_above=40, few_below=8: many {0}, medium {1, 2}, few {3};
    # the default bounds (100, 20) would give medium {0, 1}, few {2, 3}
    scores = torch.eye(4)[[0, 1, 2, 0]]
    targets = torch.tensor([0, 1, 2, 3])
    report = long_tail_report(scores, targets, [50, 30, 10, 5], many_above=40, few_below=8)
    thresholds = report["groups"]["thresholds"]
    assert thresholds["group_of_class"] == [0, 1, 1, 2]
    assert thresholds["sizes"] == {"many": 1, "medium": 2, "few": 1}
    assert thresholds["acc"] == {"many": 100.0, "medium": 100.0, "few": 0.0}
    assert thresholds["params"] == {"many_above": 40, "few_below": 8}
    assert report["groups"]["thirds"]["params"] == {}


def test_flatten_report_keys_and_values_without_prefix():
    report = {
        "top1": 50.0,
        "top5": None,
        "balanced_acc": 40.0,
        "groups": {"thirds": {"acc": {"many": 90.0, "medium": 40.0, "few": 10.0}, "std": 32.5}},
    }
    assert flatten_report(report) == {
        "top1": 50.0,
        "balanced_acc": 40.0,
        "thirds/many": 90.0,
        "thirds/medium": 40.0,
        "thirds/few": 10.0,
        "thirds/std": 32.5,
    }


# --- groups ----------------------------------------------------------------------------------


def test_as_counts_default_name_and_integer_min_in_messages():
    with pytest.raises(ValueError) as info:
        as_counts([3, -1])
    assert str(info.value) == "train_counts: per-class counts must be >= 0, got min -1"
    with pytest.raises(ValueError) as info:
        as_counts([[1, 2]])
    assert str(info.value) == (
        "train_counts: expected a non-empty 1-D sequence of per-class counts, got shape (1, 2)"
    )


def test_as_counts_non_integers_message_lists_first_ten():
    counts = [i + 0.5 for i in range(11)]
    with pytest.raises(ValueError) as info:
        as_counts(counts)
    assert str(info.value) == (
        f"train_counts: per-class counts must be integers, got {counts[:10]}"
    )


def test_as_counts_turns_integral_floats_into_int64():
    out = as_counts([4.0, 0.0, 2.0])
    assert out.tolist() == [4, 0, 2]
    assert out.dtype == np.int64  # documented: a 1-D int64 array


def test_group_classes_default_rule_is_thirds():
    grouping = group_classes([1, 5, 3])
    assert grouping.rule == "thirds"
    assert grouping.group_of_class.tolist() == [2, 0, 1]
    assert grouping.params == {}
    assert thirds_groups([1, 5, 3]).rule == "thirds"


def test_threshold_bounds_may_touch_but_not_overlap():
    # few_below == many_above + 1 leaves Medium empty but is allowed
    grouping = threshold_groups([7, 5, 6, 4], many_above=5, few_below=6)
    assert grouping.rule == "thresholds"
    assert grouping.group_of_class.tolist() == [0, 2, 0, 2]
    assert grouping.sizes.tolist() == [2, 0, 2]
    assert grouping.sizes.dtype == np.int64  # documented: (3,) int64
    assert grouping.params == {"many_above": 5, "few_below": 6}
    with pytest.raises(ValueError) as info:
        threshold_groups([7, 5], many_above=5, few_below=7)
    assert str(info.value) == (
        "thresholds: need few_below <= many_above + 1 so that the groups "
        "do not overlap, got few_below=7, many_above=5"
    )


# --- feature batches -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch, described",
    [
        ([torch.zeros(1)] * 4, "list of length 4"),
        ({"images": 1, "labels": 2}, "dict of length 2"),
        (5, "int of length ?"),
    ],
)
def test_bad_batch_message(batch, described):
    with pytest.raises(ValueError) as info:
        extract_features(nn.Identity(), [batch])
    assert str(info.value) == (
        "feature loader: batches must be (images, labels) or (indexes, "
        f"images, labels), got {described}"
    )


def test_crops_instead_of_images_message():
    batch = ([torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)], torch.tensor([0]))
    with pytest.raises(ValueError) as info:
        extract_features(nn.Identity(), [batch])
    assert str(info.value) == (
        "feature loader: images must be one tensor per batch (an "
        "evaluation transform, not a list of augmented crops), got list"
    )


# --- feature cache ---------------------------------------------------------------------------


def test_cache_written_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    key = {"version": 1, "num_images": 2}
    feats, labels = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1, 0])
    path = tmp_path / "train-x.pt"
    save_as_if_from_gpu(monkeypatch, {"key": key, "features": feats, "labels": labels}, path)
    hit = load_cached(path, key)
    assert hit is not None
    assert torch.equal(hit[0], feats) and torch.equal(hit[1], labels)


# --- checkpoint ------------------------------------------------------------------------------


def test_backbone_state_dict_message_lists_first_five_keys():
    state = {f"head.{i}": torch.zeros(1) for i in range(7)}
    state["momentum_backbone.w"] = torch.zeros(1)  # not under "backbone."
    with pytest.raises(ValueError) as info:
        backbone_state_dict(state)
    assert str(info.value) == (
        "pretrained checkpoint: ? holds no 'backbone.' weights (first "
        "keys: ['head.0', 'head.1', 'head.2', 'head.3', 'head.4'])"
    )


def write_args(tmp_path, backbone):
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"backbone": backbone, "data": {"dataset": "digits"}}))
    return path


def test_load_args_invalid_json_message(tmp_path):
    path = tmp_path / "args.json"
    path.write_text('{"backbone": ')
    try:
        json.loads('{"backbone": ')
    except json.JSONDecodeError as err:
        reason = str(err)
    with pytest.raises(ValueError) as info:
        load_args(tmp_path / "last.ckpt")
    assert str(info.value) == f"pretrained checkpoint: {path} is not valid JSON: {reason}"


def test_load_args_needs_a_json_object(tmp_path):
    path = tmp_path / "args.json"
    path.write_text("[1]")
    with pytest.raises(ValueError) as info:
        load_args(tmp_path / "last.ckpt")
    assert str(info.value) == f"pretrained checkpoint: {path} must hold a JSON object"


def test_load_args_kwargs_must_be_an_object(tmp_path):
    path = write_args(tmp_path, {"name": "convnet", "kwargs": [4]})
    with pytest.raises(ValueError) as info:
        load_args(tmp_path / "last.ckpt")
    assert str(info.value) == (
        f"pretrained checkpoint: {path} backbone.kwargs must be an object or null, got list"
    )


def test_load_args_unknown_stem(tmp_path):
    path = write_args(tmp_path, {"name": "resnet18", "stem": "bogus"})
    with pytest.raises(ValueError) as info:
        load_args(tmp_path / "last.ckpt")
    assert str(info.value) == (
        f"pretrained checkpoint: {path} backbone.stem must be one of "
        "['auto', 'cifar', 'imagenet'] or absent, got 'bogus'"
    )


@pytest.mark.parametrize("padding", [-1, True, "2", 2.0])
def test_load_args_bad_stem_padding(tmp_path, padding):
    path = write_args(tmp_path, {"name": "resnet18", "cifar_stem_padding": padding})
    with pytest.raises(ValueError) as info:
        load_args(tmp_path / "last.ckpt")
    assert str(info.value) == (
        f"pretrained checkpoint: {path} backbone.cifar_stem_padding must "
        f"be an int >= 0 or absent, got {padding!r}"
    )


@pytest.mark.parametrize("padding", [0, 1])
def test_load_args_accepts_small_stem_paddings(tmp_path, padding):
    backbone = {"name": "resnet18", "stem": "cifar", "cifar_stem_padding": padding}
    write_args(tmp_path, backbone)
    assert load_args(tmp_path / "last.ckpt") == {
        "backbone": backbone,
        "data": {"dataset": "digits"},
    }


def save_checkpoint(folder, state, args=ARGS):
    (folder / "args.json").write_text(json.dumps(args))
    torch.save({"state_dict": state}, folder / "last.ckpt")
    return folder / "last.ckpt"


def test_shape_mismatch_names_the_default_args_file(tmp_path):
    state = {"features.0.weight": torch.zeros(1, 1, 1, 1)}
    ckpt = save_checkpoint(tmp_path, {"backbone." + k: v for k, v in state.items()})
    try:  # torch's own text for the same mismatch
        build_backbone("convnet", "digits", CONVNET["kwargs"]).load_state_dict(state, strict=False)
    except RuntimeError as err:
        reason = str(err)
    with pytest.raises(ValueError) as info:
        load_pretrained_backbone(ckpt)
    assert str(info.value) == (
        f"pretrained checkpoint: {ckpt} does not fit backbone 'convnet' "
        f"built from {tmp_path / 'args.json'}: {reason}"
    )


def loadable_keys(net):
    """State keys that ``load_state_dict`` reports missing: BatchNorm fills in an absent
    ``num_batches_tracked`` itself."""
    return [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]


def test_key_mismatch_lists_the_first_ten_unexpected(tmp_path):
    keys = loadable_keys(build_backbone("convnet", "digits", CONVNET["kwargs"]))
    state = {"backbone.features.0.weight": torch.zeros(4, 3, 3, 3)}
    extra = [f"extra{i:02d}" for i in range(11)]
    state.update({"backbone." + k: torch.zeros(1) for k in extra})
    ckpt = save_checkpoint(tmp_path, state)
    with pytest.raises(ValueError) as info:
        load_pretrained_backbone(ckpt)
    assert str(info.value) == (
        f"pretrained checkpoint: {ckpt} does not match backbone "
        "'convnet' (dataset 'digits', stem 'auto', CIFAR stem padding 2): "
        f"missing keys {keys[1:]}, unexpected keys {extra[:10]}"
    )


def test_key_mismatch_names_the_checkpoints_stem_and_first_ten_missing(tmp_path):
    args = {
        "backbone": {"name": "resnet18", "stem": "cifar", "cifar_stem_padding": 1},
        "data": {"dataset": "cifar10"},
    }
    keys = loadable_keys(
        build_backbone("resnet18", "cifar10", None, stem="cifar", cifar_stem_padding=1)
    )
    assert keys[0] == "conv1.weight"
    ckpt = save_checkpoint(tmp_path, {"backbone.conv1.weight": torch.zeros(64, 3, 3, 3)}, args)
    with pytest.raises(ValueError) as info:
        load_pretrained_backbone(ckpt)
    assert str(info.value) == (
        f"pretrained checkpoint: {ckpt} does not match backbone "
        "'resnet18' (dataset 'cifar10', stem 'cifar', CIFAR stem padding "
        f"1): missing keys {keys[1:11]}, unexpected keys []"
    )


def test_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = build_backbone("convnet", "digits", CONVNET["kwargs"])
    (tmp_path / "args.json").write_text(json.dumps(ARGS))
    state = {"backbone." + k: v for k, v in net.state_dict().items()}
    save_as_if_from_gpu(monkeypatch, {"state_dict": state}, tmp_path / "last.ckpt")
    loaded, _ = load_pretrained_backbone(tmp_path / "last.ckpt")
    got = loaded.state_dict()
    assert all(torch.equal(got[k], v) for k, v in net.state_dict().items())
