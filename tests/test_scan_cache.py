"""The pre-scan cache: a cached scan equals a fresh one, and notices changed, added and removed files."""
from __future__ import annotations

import os
import shutil

from fastnas.data.folder import check_file, scan_split
from fastnas.data.scan_cache import ScanCache


def _tree(tmp_path, sample_dir):
    root = tmp_path / "data"
    for split in ("train",):
        for wnid in sorted(os.listdir(sample_dir / split))[:2]:
            shutil.copytree(sample_dir / split / wnid, root / split / wnid)
    return root


def _same(a, b):
    return (a.files, a.labels, [(p.path, p.reason) for p in a.problems]) == \
           (b.files, b.labels, [(p.path, p.reason) for p in b.problems])


def test_cached_scan_equals_fresh_and_notices_every_change(tmp_path, sample_dir):
    root = _tree(tmp_path, sample_dir)
    fresh = scan_split(root, "train", cache=False)
    first = scan_split(root, "train")                       # fills the cache
    again = scan_split(root, "train")                       # served from it
    assert _same(fresh, first) and _same(fresh, again)
    cache = ScanCache(root / "train", check_file)
    assert len(cache.entries) == len(fresh.files)

    wnid = fresh.classes[0]
    victim = fresh.files[0]
    with open(victim, "r+b") as f:                          # truncated: the end-of-image marker is gone
        f.truncate(os.path.getsize(victim) // 2)
    shutil.copy(fresh.files[1], root / "train" / wnid / "zz_added.JPEG")
    os.remove(fresh.files[2])
    changed = scan_split(root, "train")
    assert _same(changed, scan_split(root, "train", cache=False))
    assert victim in [p.path for p in changed.problems]
    assert str(root / "train" / wnid / "zz_added.JPEG") in changed.files
    assert fresh.files[2] not in changed.files
    gone = os.path.relpath(fresh.files[2], root / "train")
    assert gone not in ScanCache(root / "train", check_file).entries and len(ScanCache(root / "train", check_file).entries) == len(changed.files) + len(changed.problems)


def test_an_unreadable_cache_is_ignored(tmp_path, sample_dir):
    root = _tree(tmp_path, sample_dir)
    fresh = scan_split(root, "train")
    cache = ScanCache(root / "train", check_file)
    cache.path.write_text("{ not json")
    assert _same(scan_split(root, "train"), fresh)


def test_bench_scan_writes_its_numbers(tmp_path):
    import json
    import subprocess
    import sys
    from test_train import REPO, sub_env
    out = tmp_path / "scan.json"
    r = subprocess.run([sys.executable, "bench/bench_scan.py", "--files", "2000", "--json", str(out)], cwd=REPO,
                       env=sub_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["files"] == 2000 and {"cold_ms_per_file", "cached_ms_per_file", "cached_s_at_1281167"} <= set(data)
    assert abs(data["cached_s_at_1281167"] - data["cached_ms_per_file"] * 1281167 / 1000) < 1e-9
