"""Small data sets that ship inside the package, so demos and benchmarks never download anything.

``digits.npz`` is a copy of scikit-learn's bundled 8x8 handwritten digits (``sklearn.datasets.load_digits``:
1797 images, pixel values 0..16, labels 0..9), itself the test set of the UCI "Optical Recognition of
Handwritten Digits" data (Alpaydin & Kaynak, 1998; CC BY 4.0).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

__all__ = ["load_digits", "digits_split"]


def load_digits(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8x8 digits as ``(images, labels)``: images flattened to (1797, 64) and scaled to [0, 1], labels
    int64 in 0..9."""
    with resources.files(__name__).joinpath("digits.npz").open("rb") as fh:
        data = np.load(fh)
        images, labels = data["images"], data["labels"]
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float64) / 16.0).to(dtype)
    return x, torch.from_numpy(labels.astype(np.int64))


def digits_split(test_fraction: float = 0.2, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A fixed shuffled train/test split: ``(x_train, y_train, x_test, y_test)``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    x, y = load_digits(dtype)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]
