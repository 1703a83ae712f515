"""Hard image mining (SHF, "Robust Face Detection via Learning Small Faces on Hard Images").

Every image carries a flag updated from the training forward pass: it is *well detected* when all of
its positive anchors score at least ``easy_score``. When an epoch's order is drawn, each well-detected
image is skipped with probability ``skip_prob``, so steps go to the images the model still gets wrong.
Model-agnostic: it needs the face probabilities of the positive anchors, which every detector has.
"""

from __future__ import annotations

import numpy as np
import torch


class HardImageMiner:
    def __init__(self, num_images: int, skip_prob: float = 0.7, easy_score: float = 0.85, seed: int = 0):
        self.well_detected = np.zeros(num_images, bool)
        self.skip_prob, self.easy_score, self.seed = skip_prob, easy_score, seed

    @torch.no_grad()
    def update(self, indices: torch.Tensor, face_prob: torch.Tensor, labels: torch.Tensor) -> None:
        """Re-flag the images of a batch: ``face_prob`` and ``labels`` are ``(B, A)``; ``indices (B,)``."""
        positive = labels == 1
        worst = torch.where(positive, face_prob, torch.ones_like(face_prob)).amin(dim=1)
        easy = (positive.any(dim=1) & (worst >= self.easy_score)).cpu().numpy()
        self.well_detected[indices.cpu().numpy()] = easy

    def keep(self, order: np.ndarray, epoch: int) -> np.ndarray:
        """The images of `order` that epoch `epoch` visits (a pure function of the flags and the epoch)."""
        draw = np.random.default_rng([self.seed, epoch, 7]).random(len(self.well_detected))
        skipped = self.well_detected & (draw < self.skip_prob)
        return order[~skipped[order]]

    def state_dict(self) -> dict:
        return {"well_detected": torch.from_numpy(self.well_detected.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.well_detected = state["well_detected"].numpy().astype(bool)
