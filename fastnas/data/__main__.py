"""`python -m fastnas.data check PATH [--decode]`: scan a dataset, list classes, counts and every problem file.

Exit 0 when the dataset is usable (train/ has usable images; so does every other split folder
beside it, e.g. val/ or CIFAR's test/), 1 when not.
`--decode` also decodes every file that passed the structural pre-scan, to find files whose
headers are whole but whose image data is corrupt.
"""
from __future__ import annotations

import argparse
import os
import sys

from fastnas.data.folder import DataError, Problem, list_classes, scan_split
from fastnas.cli import cli_entry


def check(path: str, decode: bool = False, out=sys.stdout) -> bool:
    try:
        classes = list_classes(path)
    except DataError as e:
        print(f"NOT USABLE: {e}", file=out)
        return False
    print(f"{path}: {len(classes)} classes", file=out)
    usable = True
    others = sorted(e.name for e in os.scandir(path) if e.is_dir() and e.name != "train" and not e.name.startswith("."))
    for split in ("train", *(others or ["val"])):
        try:
            scan = scan_split(path, split, classes, cache=False)   # a check checks every file
        except DataError as e:
            if split == "val" and "no val/ folder" in str(e):
                print(f"{split}: no val/ folder (only train/ is used)", file=out)
                continue
            print(f"{split}: NOT USABLE: {e}", file=out)
            usable = False
            continue
        if decode:
            _decode_all(scan)
        counts = scan.counts()
        print(f"{split}: {len(scan)} usable images, {len(scan.problems)} skipped; per class "
              f"min {min(counts)} max {max(counts)}", file=out)
        for wnid, n in zip(classes, counts):
            print(f"  {wnid}: {n}", file=out)
        for line in scan.warnings:
            print(f"  warning: {line}", file=out)
        for p in scan.problems:
            print(f"  skipped: {p.path}: {p.reason}", file=out)
    print("USABLE" if usable else "NOT USABLE", file=out)
    return usable


def _decode_all(scan) -> None:
    """Move files that fail a real decode from the usable list to the problems."""
    from fastnas.data.torchvision import read_rgb
    keep_files, keep_labels = [], []
    for f, label in zip(scan.files, scan.labels):
        try:
            read_rgb(f)
        except DataError as e:
            scan.problems.append(Problem(f, str(e)[len(f) + 2:]))
            continue
        keep_files.append(f)
        keep_labels.append(label)
    scan.files, scan.labels = keep_files, keep_labels


@cli_entry
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastnas.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="scan a dataset folder and list every problem file")
    p.add_argument("path")
    p.add_argument("--decode", action="store_true", help="also decode every file (slow, thorough)")
    args = parser.parse_args(argv)
    return 0 if check(args.path, decode=args.decode) else 1


if __name__ == "__main__":
    sys.exit(main())
