"""Fashion-MNIST straight from the idx .gz files (Debian `dataset-fashion-mnist`).

The same loader reads the full Debian files and the 500-image subset that
`make_test_subset.py` writes to tests/fixtures/fmnist-subset/ (same layout).
"""
import gzip
import os
import struct

import numpy as np
import torch

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# Statistics of the 60k training images scaled to [0, 1] (same for the 3 RGB
# copies of the grey channel); rounded, and written to config.json.
MEAN = 0.2860
STD = 0.3530


def read_idx(path):
    """Read an idx file (optionally gzipped) into a numpy array (uint8 data only)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not a uint8 idx file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {arr.size} bytes of data, header says {dims}")
    return arr.reshape(dims)


def write_idx(path, arr):
    """Write a uint8 array as a gzipped idx file (the layout of the Debian files)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    # mtime=0 so that re-running gives byte-identical files
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + arr.tobytes())


def load_split(split, root=DEFAULT_DIR):
    """split 'train' or 't10k' -> (images uint8 [N,28,28], labels int64 [N]) as torch tensors."""
    imgs = read_idx(os.path.join(root, f"{split}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(root, f"{split}-labels-idx1-ubyte.gz"))
    if imgs.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}/{split}: {imgs.shape[0]} images but {labels.shape[0]} labels")
    return torch.from_numpy(imgs.copy()), torch.from_numpy(labels.astype(np.int64))


def to_input(imgs_u8):
    """uint8 [B,28,28] -> normalized float [B,3,28,28] (grey copied to RGB, /255, mean/std).

    This is exactly the runtime preprocessing for crop_pct 1.0 at image_size 28
    (the resize is the identity)."""
    x = imgs_u8.float().div_(255.0)
    x = (x - MEAN) / STD
    return x.unsqueeze(1).expand(-1, 3, -1, -1)


def augment(imgs_u8, gen, pad=2):
    """Random crop with zero padding `pad` and horizontal flip, on a uint8 batch."""
    b, h, w = imgs_u8.shape
    padded = torch.zeros((b, h + 2 * pad, w + 2 * pad), dtype=imgs_u8.dtype)
    padded[:, pad:pad + h, pad:pad + w] = imgs_u8
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    flip = torch.rand(b, generator=gen) < 0.5
    rows = oy[:, None] + torch.arange(h)[None, :]                     # [B,h]
    cols = ox[:, None] + torch.arange(w)[None, :]                     # [B,w]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(b)[:, None, None]
    return padded[bi, rows[:, :, None], cols[:, None, :]]
