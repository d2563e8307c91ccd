"""L2 clipping of a model update, for client-level DP with clipping at the hospital.

Flower's ``fixedclipping_mod`` / ``adaptiveclipping_mod`` clip an ArrayRecord of full weights;
medfed's hospitals send one encoded payload instead, so they clip the delta themselves before
encoding, with the norm the server's ``DifferentialPrivacyClientSide*Clipping`` wrapper sends in
the train config (key ``"clipping_norm"``). Only float tensors count and are scaled: integer
buffers (BatchNorm's ``num_batches_tracked``) carry no learnt information and pass unchanged.
"""

from __future__ import annotations

import numpy as np

CLIPPING_NORM_KEY = "clipping_norm"
NORM_BIT_KEY = "norm_bit"


def update_norm(arrays: list[np.ndarray]) -> float:
    """L2 norm of all float entries of an update, as if flattened into one vector."""
    squares = [
        float(np.sum(np.square(a, dtype=np.float64)))
        for a in arrays
        if np.issubdtype(np.asarray(a).dtype, np.floating)
    ]
    return float(np.sqrt(sum(squares)))


def clip_update(arrays: list[np.ndarray], max_norm: float) -> tuple[list[np.ndarray], bool]:
    """A copy of the update scaled to L2 norm at most ``max_norm``, and whether it was scaled.

    The flag is Flower's ``norm_bit`` for adaptive clipping (reply it in the train metrics).
    """
    if max_norm <= 0:
        raise ValueError(f"clipping norm must be positive, not {max_norm}")
    norm = update_norm(arrays)
    factor = min(1.0, max_norm / norm) if norm > 0 else 1.0
    clipped = [
        (a * factor).astype(a.dtype) if np.issubdtype(a.dtype, np.floating) else a.copy()
        for a in map(np.asarray, arrays)
    ]
    return clipped, factor < 1.0
