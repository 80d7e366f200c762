"""torchrun support for training: see :mod:`ddpmkit.distributed` (re-exported here).

``torchrun --nproc_per_node=N -m ddpmkit train ...`` starts N processes with RANK / WORLD_SIZE /
LOCAL_RANK set; :func:`init_from_env` joins them (gloo on CPU, NCCL on CUDA). Without those
variables it is a single process (world 1).
"""

from __future__ import annotations

from ..distributed import Dist, init_from_env

__all__ = ["Dist", "init_from_env"]
