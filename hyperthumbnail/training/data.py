"""Training images held in memory as uint8 tensors; random crops, flips and 90-degree rotations.

The training set is small (tens of ~1 MP photos), so decoding it once and cropping on the training
device (CPU or GPU) removes the data loader from the critical path.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..codec.images import list_images


class ImageBank:
    def __init__(self, folder: str | Path, device: torch.device | str = "cpu", min_side: int = 256):
        self.images: list[torch.Tensor] = []
        for path in tqdm(list_images(folder), desc=f"loading {folder}", leave=False):
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
            if min(arr.shape[:2]) >= min_side:
                self.images.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).to(device))
        if not self.images:
            raise ValueError(f"no training image in {folder} has both sides >= {min_side} px")
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch: int, crop: int, generator: torch.Generator) -> torch.Tensor:
        """(batch, 3, crop, crop) float in [0,1] on the bank's device."""
        out = []
        for _ in range(batch):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            _, h, w = img.shape
            size = min(crop, h, w)
            y = int(torch.randint(h - size + 1, (1,), generator=generator))
            x = int(torch.randint(w - size + 1, (1,), generator=generator))
            patch = img[:, y:y + size, x:x + size]
            if bool(torch.randint(2, (1,), generator=generator)):
                patch = patch.flip(-1)
            patch = torch.rot90(patch, int(torch.randint(4, (1,), generator=generator)), dims=(1, 2))
            out.append(patch)
        return torch.stack(out).float().div_(255.0)
