"""The global-only baseline's objective as a pure function (BYOL's normalised regression).

For a student view ``s`` and a teacher global view ``t`` of one image, with ``p`` the student's
prediction and ``k`` the teacher's projection of the whole view (pooled features, no locality):
``L = 2 - 2 cos(p, k)``. The total is the mean over images and over the (student, teacher) pairs
of :func:`model.pairs.student_teacher_pairs` (the same 14 pairs as CLoVE for 2 + 6 views).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def byol_pair_loss(p: Tensor, k: Tensor) -> Tensor:
    """``p [R, D]`` student predictions, ``k [R, D]`` teacher projections -> ``[R]`` losses in fp32."""
    with torch.autocast(p.device.type, enabled=False):
        return 2.0 - 2.0 * F.cosine_similarity(p.float(), k.float(), dim=-1)
