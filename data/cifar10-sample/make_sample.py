"""Make data/cifar10-sample from the project's shared CIFAR-10 JPEG folder (see SOURCE.md).

    python data/cifar10-sample/make_sample.py [--src ../shared/data/cifar10] [--dst data/cifar10-sample]

Both splits come from CIFAR-10's *training* images, so that the search's fitness never looks at
the test set, which is what NAS-Bench-201's reported `cifar10_test` accuracies were measured on:
one `numpy.random.default_rng(0)` walks the classes in sorted order and, for each class, draws
`rng.choice(5000, 1200, replace=False)` indices into that class's sorted train/ file list; the
first 1,000 go to train/, the other 200 to val/ (disjoint). The chosen files are copied byte for
byte under their original names. Idempotent: files already there with the same bytes are left alone, anything else
in the class folders is removed, so a rerun reproduces exactly the same folders.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPLITS = {"train": 1000, "val": 200}         # images per class, all drawn from the source's train/
SEED = 0


def make(src: Path, dst: Path) -> dict[str, int]:
    rng = np.random.default_rng(SEED)
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    if len(classes) != 10:
        raise SystemExit(f"{src / 'train'}: expected the 10 CIFAR-10 class folders, found {len(classes)}")
    counts = dict.fromkeys(SPLITS, 0)
    for cls in classes:
        files = sorted(p.name for p in (src / "train" / cls).iterdir() if p.is_file())
        need = sum(SPLITS.values())
        if len(files) < need:
            raise SystemExit(f"{src / 'train' / cls}: {len(files)} files, fewer than {need}")
        picked = [files[i] for i in rng.choice(len(files), size=need, replace=False)]
        start = 0
        for split, k in SPLITS.items():
            chosen = set(picked[start:start + k])
            start += k
            out = dst / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for p in out.iterdir():                  # a rerun leaves nothing from another draw
                if p.name not in chosen:
                    p.unlink()
            for name in sorted(chosen):
                data = (src / "train" / cls / name).read_bytes()
                target = out / name
                if not target.is_file() or target.read_bytes() != data:
                    target.write_bytes(data)
                    counts[split] += 1
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    p.add_argument("--dst", default=str(HERE))
    args = p.parse_args()
    counts = make(Path(args.src), Path(args.dst))
    for split, k in SPLITS.items():
        print(f"{split}: {10 * k} images ({counts[split]} copied, the rest already there)")


if __name__ == "__main__":
    main()
