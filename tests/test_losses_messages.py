"""Every loss names itself and its argument, word for word, when it gets too few views, a wrong
band or a bad setting: the one-line errors users see come from these names."""

from __future__ import annotations

import pytest
import torch

from solo_multiview.losses.emp_ssl import emp_ssl_loss
from solo_multiview.losses.fastsiam import fastsiam_loss
from solo_multiview.losses.mmcr import mmcr_loss
from solo_multiview.losses.mv_barlow_twins import mv_barlow_twins_loss
from solo_multiview.losses.mv_byol import mv_byol_loss
from solo_multiview.losses.mv_dhel import mv_dhel_loss
from solo_multiview.losses.mv_infonce import mv_infonce_loss
from solo_multiview.losses.mv_mocov2plus import mv_mocov2plus_loss
from solo_multiview.losses.mv_simsiam import mv_simsiam_loss
from solo_multiview.losses.mv_vicreg import mv_vicreg_loss
from solo_multiview.losses.polyview import polyview_loss

ONE_VIEW = torch.randn(1, 4, 3)
TWO_VIEWS = torch.randn(2, 4, 3)


@pytest.mark.parametrize("call,message", [
    (lambda: mv_barlow_twins_loss(ONE_VIEW),
     "mv_barlow_twins_loss: z: expected at least 2 views, got 1"),
    (lambda: mv_vicreg_loss(ONE_VIEW), "mv_vicreg_loss: z: expected at least 2 views, got 1"),
    (lambda: fastsiam_loss(ONE_VIEW, TWO_VIEWS),
     "fastsiam_loss: p: expected at least 2 views, got 1"),
    (lambda: fastsiam_loss(TWO_VIEWS, ONE_VIEW),
     "fastsiam_loss: z: expected at least 2 views, got 1"),
    (lambda: fastsiam_loss(TWO_VIEWS, torch.randn(3, 4, 3)),
     "fastsiam_loss: got 3 target views z but only 2 prediction views p; targets exist for the "
     "large crops, predictions for every crop"),
    (lambda: mv_dhel_loss(TWO_VIEWS, band="x"),
     "mv_dhel_loss: band must be a BandFilter or None (no filter); got str"),
    (lambda: mv_infonce_loss(TWO_VIEWS, band="x"),
     "mv_infonce_loss: band must be a BandFilter or None (no filter); got str"),
    (lambda: mv_infonce_loss(TWO_VIEWS, negatives="bogus"),
     "mv_infonce_loss: negatives must be one of cross_view, all; got 'bogus'"),
    (lambda: mv_mocov2plus_loss(ONE_VIEW, TWO_VIEWS, torch.randn(2, 5, 3)),
     "mv_mocov2plus_loss: q: expected at least 2 views, got 1"),
    (lambda: mv_mocov2plus_loss(TWO_VIEWS, ONE_VIEW, torch.randn(2, 5, 3)),
     "mv_mocov2plus_loss: k: expected at least 2 views, got 1"),
    (lambda: mv_simsiam_loss(ONE_VIEW, TWO_VIEWS),
     "mv_simsiam_loss: p: expected at least 2 views, got 1"),
    (lambda: mv_simsiam_loss(TWO_VIEWS, torch.randn(3, 4, 3)),
     "mv_simsiam_loss: got 3 target views but only 2 prediction views; targets exist for the "
     "large crops, predictions for every crop"),
    (lambda: emp_ssl_loss(TWO_VIEWS, eps=0.0),
     "emp_ssl_loss: eps must be a finite number > 0; got 0.0"),
    (lambda: emp_ssl_loss(TWO_VIEWS, invariance_weight=-1.0),
     "emp_ssl_loss: invariance_weight must be a finite number >= 0; got -1.0"),
    (lambda: mv_byol_loss(ONE_VIEW, TWO_VIEWS),
     "mv_byol_loss: p: expected at least 2 views, got 1"),
    (lambda: polyview_loss(TWO_VIEWS, form="bogus"),
     "polyview_loss: form must be one of geometric, arithmetic, sufficient_statistics; got "
     "'bogus'"),
    (lambda: fastsiam_loss(TWO_VIEWS, torch.randn(2, 4, 5)),
     "fastsiam_loss: p and z must share (B, d); got (2, 4, 3) and (2, 4, 5)"),
])
def test_errors_name_the_loss_exactly(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message


@pytest.mark.parametrize("loss,name", [
    (mv_dhel_loss, "mv_dhel_loss"), (mv_infonce_loss, "mv_infonce_loss"),
    (polyview_loss, "polyview_loss"), (mmcr_loss, "mmcr_loss"), (emp_ssl_loss, "emp_ssl_loss"),
])
def test_view_count_errors_start_with_the_loss_name(loss, name):
    with pytest.raises(ValueError) as error:
        loss(ONE_VIEW)
    assert str(error.value).startswith(f"{name}: ")


def test_fastsiam_targets_are_the_mean_of_the_other_views():
    from solo_multiview.losses.fastsiam import fastsiam_targets

    z = torch.randn(4, 5, 3, dtype=torch.float64)
    expected = torch.stack([sum(z[j] for j in range(4) if j != i) / 3 for i in range(4)])
    torch.testing.assert_close(fastsiam_targets(z), expected)
