"""Pure-torch K-view SSL losses and the extreme-feature (band) filter.

Every K-view loss reduces exactly to the standard two-view loss at K = 2 and keeps its scale
independent of K; each module's docstring states its formula.
"""

from .band_filter import BAND_MODES, Band, band_from_cfg, keep_mask, validate_band
from .distributed import gather_no_grad, gather_with_grad, rank_and_world
from .mttv import MTTV_FORMS, mttv_infonce
from .mv_barlow_twins import mv_barlow_twins_loss
from .mv_byol import mv_byol_loss
from .mv_mocov2plus import mv_mocov2plus_loss
from .mv_simclr import mv_nt_xent
from .mv_simsiam import mv_simsiam_loss
from .mv_vicreg import mv_vicreg_loss

__all__ = [
    "BAND_MODES",
    "Band",
    "MTTV_FORMS",
    "band_from_cfg",
    "gather_no_grad",
    "gather_with_grad",
    "keep_mask",
    "mttv_infonce",
    "mv_barlow_twins_loss",
    "mv_byol_loss",
    "mv_mocov2plus_loss",
    "mv_nt_xent",
    "mv_simsiam_loss",
    "mv_vicreg_loss",
    "rank_and_world",
    "validate_band",
]
