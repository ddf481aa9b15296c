"""Write the small Fashion-MNIST test material the repository commits:

  tests/fixtures/fmnist-subset/t10k-{images-idx3,labels-idx1}-ubyte.gz
      the first 500 test images and labels, in the dataset's own idx format, gzipped
      exactly like the Debian files (so one loader reads both; tools/train/data.py
      `load_split("t10k", "tests/fixtures/fmnist-subset")`)
  tests/images/fmnist/NNNN-<label>.png
      8 test images as 28x28 8-bit grey PNGs, NNNN = index in the test set

The output is byte-for-byte reproducible (gzip mtime 0, PNG without metadata).

    ~/hvenv/bin/python tools/train/make_test_subset.py [--repo .] [--count 500]
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402

SLUGS = ["t-shirt-top", "trouser", "pullover", "dress", "coat",
         "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(HERE)))
    ap.add_argument("--data-dir", default=data.DEFAULT_DIR)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--images", type=int, default=8)
    args = ap.parse_args()

    imgs = data.read_idx(os.path.join(args.data_dir, "t10k-images-idx3-ubyte.gz"))
    labels = data.read_idx(os.path.join(args.data_dir, "t10k-labels-idx1-ubyte.gz"))

    fx = os.path.join(args.repo, "tests", "fixtures", "fmnist-subset")
    os.makedirs(fx, exist_ok=True)
    data.write_idx(os.path.join(fx, "t10k-images-idx3-ubyte.gz"), imgs[:args.count])
    data.write_idx(os.path.join(fx, "t10k-labels-idx1-ubyte.gz"), labels[:args.count])
    # round trip through the common loader
    ri, rl = data.load_split("t10k", fx)
    assert np.array_equal(ri.numpy(), imgs[:args.count]) and np.array_equal(rl.numpy(), labels[:args.count])
    print(f"wrote {fx}: {args.count} images")

    out = os.path.join(args.repo, "tests", "images", "fmnist")
    os.makedirs(out, exist_ok=True)
    # the first image of each of the first `images` distinct classes, in test-set order
    picked, seen = [], set()
    for i, lab in enumerate(labels):
        if int(lab) not in seen:
            seen.add(int(lab))
            picked.append(i)
        if len(picked) == args.images:
            break
    for i in picked:
        path = os.path.join(out, f"{i:04d}-{SLUGS[int(labels[i])]}.png")
        Image.fromarray(imgs[i]).save(path, optimize=False)
        back = np.asarray(Image.open(path))
        assert back.shape == (28, 28) and np.array_equal(back, imgs[i])
        print("wrote", path)


if __name__ == "__main__":
    main()
