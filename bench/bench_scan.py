"""Dataset start-up: the pre-scan of every file, cold and from the scan cache.

Generates a tree of N small real JPEG files in ImageNet's layout (1,000 class folders) in a
temporary folder, then times three scans of it: with the cache switched off (every header and tail
read), cold (empty cache: the same reads, plus writing the cache) and cached (only the listing and a
stat per file). The files were just written, so the "cold" reads come from the OS page cache: on a
real disk or network file system the uncached scan is slower, the cached one barely changes.

    python bench/bench_scan.py --files 100000 --json runs/bench_scan.json
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fastnas.cli import cli_entry  # noqa: E402
from fastnas.errors import UserError  # noqa: E402

IMAGENET_TRAIN_FILES = 1_281_167


def tiny_jpeg() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 60, 30)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_tree(root: Path, files: int, classes: int = 1000) -> None:
    data = tiny_jpeg()
    for c in range(classes):
        folder = root / "train" / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(c, files, classes):
            (folder / f"n{c:08d}_{i}.JPEG").write_bytes(data)


@cli_entry
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=100_000)
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args(argv)
    if args.files < 1000:
        raise UserError("--files must be >= 1000 (one per class folder at least)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["FASTNAS_CACHE_DIR"] = str(tmp / "cache")    # a private, empty scan cache
        from fastnas.data.folder import scan_split
        t0 = time.perf_counter()
        make_tree(tmp / "data", args.files)
        print(f"generated {args.files} JPEG files in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        def timed(**kw) -> float:
            start = time.perf_counter()
            scan = scan_split(tmp / "data", "train", **kw)
            assert len(scan) == args.files, (len(scan), args.files)
            return time.perf_counter() - start

        uncached = timed(cache=False)
        cold = timed()
        cached = timed()
    out = {"files": args.files, "uncached_ms_per_file": 1e3 * uncached / args.files,
           "cold_ms_per_file": 1e3 * cold / args.files, "cached_ms_per_file": 1e3 * cached / args.files,
           "cached_s_at_1281167": cached / args.files * IMAGENET_TRAIN_FILES,
           "cold_s_at_1281167": cold / args.files * IMAGENET_TRAIN_FILES}
    print(f"scan of {args.files} files: no cache {uncached:.2f} s, cold {cold:.2f} s, cached {cached:.2f} s "
          f"({out['cached_ms_per_file'] * 1e3:.1f} us/file: {out['cached_s_at_1281167']:.1f} s at ImageNet's "
          f"{IMAGENET_TRAIN_FILES:,} training files; cold {out['cold_s_at_1281167']:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
