"""Pure-torch K-view SSL losses and the extreme-feature (band) filter.

Every K-view loss reduces exactly to the standard two-view loss at K = 2 and keeps its scale
independent of K; each module's docstring states its formula.
"""

from .band_filter import BAND_MODES, BandFilter
from .distributed import gather_no_grad, gather_with_grad, rank_and_world
from .emp_ssl import emp_ssl_loss, total_coding_rate
from .fastsiam import fastsiam_loss
from .mmcr import mmcr_loss
from .mttv import MTTV_FORMS, mttv_infonce
from .mv_barlow_twins import mv_barlow_twins_loss
from .mv_byol import mv_byol_loss
from .mv_dhel import mv_dhel_loss
from .mv_infonce import MV_INFONCE_NEGATIVES, mv_infonce_loss
from .mv_mocov2plus import mv_mocov2plus_loss
from .mv_simclr import mv_nt_xent
from .mv_simsiam import mv_simsiam_loss
from .mv_vicreg import mv_vicreg_loss
from .polyview import POLYVIEW_FORMS, polyview_loss

__all__ = [
    "BAND_MODES",
    "BandFilter",
    "MTTV_FORMS",
    "MV_INFONCE_NEGATIVES",
    "POLYVIEW_FORMS",
    "emp_ssl_loss",
    "fastsiam_loss",
    "mmcr_loss",
    "mv_dhel_loss",
    "mv_infonce_loss",
    "polyview_loss",
    "total_coding_rate",
    "gather_no_grad",
    "gather_with_grad",
    "mttv_infonce",
    "mv_barlow_twins_loss",
    "mv_byol_loss",
    "mv_mocov2plus_loss",
    "mv_nt_xent",
    "mv_simsiam_loss",
    "mv_vicreg_loss",
    "rank_and_world",
]
