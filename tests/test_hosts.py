"""Host selection, composition and the solo-learn compatibility fixes."""

from __future__ import annotations

import pickle

import pytest

from solo_multiview.hosts import compose, resolve_host_name, solo_available
from solo_multiview.hosts.contract import KViewMethod
from solo_multiview.methods import METHODS, method_class

needs_solo = pytest.mark.skipif(not solo_available(),
                                reason="solo-learn is not installed (see README: add solo-learn)")


def test_auto_host_follows_solo_availability():
    assert resolve_host_name("auto") == ("solo" if solo_available() else "builtin")
    with pytest.raises(ValueError, match="host: unknown host 'gpu'"):
        resolve_host_name("gpu")


def test_builtin_composition_puts_the_host_behind_the_method():
    from solo_multiview.hosts import builtin

    cls = method_class("mv_simclr", "builtin")
    assert cls.__name__ == "MVSimCLR__builtin"
    # the method, its contract, the host: the guard is a callback, not a base
    assert cls.__mro__[1] is METHODS["mv_simclr"]
    assert cls.__mro__[2] is KViewMethod
    assert issubclass(cls, builtin.BaseMethod)
    assert compose(METHODS["mv_simclr"], "builtin") is cls  # cached: one class per host


def test_composed_classes_pickle_by_name():
    cls = method_class("mv_simclr", "builtin")
    assert pickle.loads(pickle.dumps(cls)) is cls


@needs_solo
def test_solo_composition_and_registration():
    from solo.methods import METHODS as SOLO_METHODS
    from solo.methods.base import BaseMethod as SoloBase

    cls = method_class("mv_simclr", "solo")
    assert issubclass(cls, SoloBase)
    assert SOLO_METHODS["mv_simclr"] is cls
    assert cls.training_step is not SoloBase.training_step  # the batched step is in front


@needs_solo
def test_solo_compat_fixes_are_idempotent_and_work():
    from solo.methods.base import BaseMethod as SoloBase
    from solo.utils.knn import WeightedKNNClassifier

    from solo_multiview.hosts import solo_compat

    solo_compat.apply()
    bases = WeightedKNNClassifier.__bases__
    solo_compat.apply()
    assert WeightedKNNClassifier.__bases__ == bases
    WeightedKNNClassifier(k=3)  # raised "Unexpected keyword arguments: compute_on_step" before
    assert "convnet" in SoloBase._BACKBONES


def test_a_method_without_its_loss_says_so():
    class NoLoss(KViewMethod):
        pass

    with pytest.raises(NotImplementedError) as error:
        KViewMethod.kview_loss(NoLoss.__new__(NoLoss), {}, [])
    assert str(error.value) == "NoLoss defines no kview_loss"
