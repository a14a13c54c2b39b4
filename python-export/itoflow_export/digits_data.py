"""scikit-learn's bundled 8x8 digits: the fixed train/test split and the data scaling.

Raw values are integers 0..16 (17 levels). Model space is [-1, 1]: training uses uniform
dequantisation u = (r + U)/17, y = 2u - 1; likelihood references use the deterministic midpoint
y = -1 + 2 (r + 0.5)/17.
"""

from __future__ import annotations

import numpy as np

LEVELS = 17
DATA_SHAPE = (1, 8, 8)
SPLIT_SEED = 20240601
N_TEST = 300
NUM_CLASSES = 10
NULL_LABEL = NUM_CLASSES
"""The conditional digits model's label for 'unconditional' (label dropout)."""


def load_split_labelled(seed: int = SPLIT_SEED, n_test: int = N_TEST):
    """Return (train, train_labels, test, test_labels): raw digits as uint8 [n, 1, 8, 8] with
    values 0..16 and their classes as uint8 [n] with values 0..9.

    The split is a seeded permutation of all 1797 images: the last ``n_test`` go to test.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = data.images  # [1797, 8, 8] float64, integer values 0..16
    raw = np.rint(images).astype(np.uint8)
    if raw.min() < 0 or raw.max() >= LEVELS or not np.array_equal(raw, images):
        raise RuntimeError("scikit-learn digits are not integers in 0..16 any more")
    labels = np.asarray(data.target)
    if labels.shape != (raw.shape[0],) or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise RuntimeError("scikit-learn digits labels are not 0..9 any more")
    labels = labels.astype(np.uint8)
    perm = np.random.default_rng(seed).permutation(raw.shape[0])
    raw = raw[perm][:, None, :, :]
    labels = labels[perm]
    return (raw[:-n_test].copy(), labels[:-n_test].copy(), raw[-n_test:].copy(),
            labels[-n_test:].copy())


def load_split(seed: int = SPLIT_SEED, n_test: int = N_TEST) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, test) raw digits as uint8 arrays of shape [n, 1, 8, 8], values 0..16
    (:func:`load_split_labelled` without the labels)."""
    train, _, test, _ = load_split_labelled(seed, n_test)
    return train, test


def midpoint(raw: np.ndarray) -> np.ndarray:
    """Deterministic model-space input y = -1 + 2 (r + 0.5)/L as float32."""
    return (-1.0 + 2.0 * (raw.astype(np.float64) + 0.5) / LEVELS).astype(np.float32)


def dequantise(raw, generator=None):
    """Uniform dequantisation into model space: y = 2 (r + U)/L - 1 (torch tensors)."""
    import torch

    r = torch.as_tensor(raw, dtype=torch.float32)
    u = torch.rand(r.shape, generator=generator)
    return 2.0 * (r + u) / LEVELS - 1.0


def to_raw(y: np.ndarray) -> np.ndarray:
    """Map model-space samples back to the nearest raw level 0..16."""
    r = np.floor((np.asarray(y, dtype=np.float64) + 1.0) / 2.0 * LEVELS)
    return np.clip(r, 0, LEVELS - 1).astype(np.uint8)
