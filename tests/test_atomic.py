"""fastnas.atomic: the one way fastnas writes files it must not lose."""
from __future__ import annotations

import json
import os
import threading

import pytest

from fastnas.atomic import atomic_file, atomic_write, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"generation": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write('{"generation": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"generation": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_two_writers_never_share_a_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    started, go = threading.Barrier(2), threading.Event()

    def writer(value):
        with atomic_write(path, "w") as f:
            started.wait()                  # both temporary files exist at once
            f.write(json.dumps({"writer": value} | {f"k{i}": value for i in range(1000)}))
            go.wait(5)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    data = json.loads(path.read_text())     # one writer's complete content, never a blend
    assert set(data.values()) in ({1}, {2})


def test_previous_file_kept_and_permissions_follow_the_umask(tmp_path):
    path, prev = tmp_path / "checkpoint.pt", tmp_path / "checkpoint.pt.prev"
    with atomic_write(path, "wb") as f:
        f.write(b"one")
    with atomic_file(path, keep_previous=prev) as tmp:
        tmp.write_bytes(b"two")
    assert path.read_bytes() == b"two" and prev.read_bytes() == b"one"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
