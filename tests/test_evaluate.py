"""Candidate evaluation: every kind of reuse gives the numbers of the plain one-at-a-time definition.

Real JPEGs from the bundled sample, a small random-weight supernet at 32 px, real torchrun for the
distributed check. fp32 comparisons are exact (same kernels on the same chunks).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fastnas.calibrate import recalibrate_bn
from fastnas.config import DataConfig, SpaceConfig
from fastnas.data import build_eval_set
from fastnas.errors import UserError
from fastnas.evaluate import Evaluator
from fastnas.fitness import Result, evaluate_fresh, model_input
from fastnas.spaces.mbconv_net import SuperNet

REPO = Path(__file__).resolve().parents[1]
SPACE = dict(resolution=32, num_classes=10, stem_channels=8, first_channels=8, channels=[8, 16, 16],
             depths=[2, 2, 1], strides=[1, 2, 1], head_channels=32)


def make_supernet(seed: int = 0) -> SuperNet:
    torch.manual_seed(seed)
    net = SuperNet(SpaceConfig(**SPACE))
    with torch.no_grad():                     # non-trivial BN affine, so statistics matter
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: a second thread only adds synchronisation on the shared 2-core machine."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def sets():
    cfg = DataConfig(path=str(REPO / "data" / "imagenette-sample"), backend="torchvision")
    calib = build_eval_set(cfg, split="calib", num_images=20, resolution=32)     # 8 + 8 + 4: a partial last batch
    val = build_eval_set(cfg, split="val", num_images=16, resolution=32)
    return calib, val


@pytest.fixture(scope="module")
def net():
    return make_supernet()


def candidates(space, n: int, seed: int = 1) -> list[tuple[int, ...]]:
    """Random architectures plus mutants and crossovers of them, so many prefixes are shared."""
    rng = np.random.default_rng(seed)
    base = [space.sample(rng) for _ in range(n)]
    out = base + [space.mutate(a, rng, 0.3) for a in base[: n // 2]]
    if n > 1:
        out += [base[0][:3] + base[1][3:]]                                   # a shared prefix
    return out + [base[0]]                                                   # a duplicate


def test_trie_walk_equals_one_by_one_equals_fresh(net, sets):
    calib, val = sets
    archs = candidates(net.space, 5)
    trie = Evaluator(net, calib, val, 8, precision="fp32", cache_mb=0).evaluate(archs)
    one_by_one = [Evaluator(net, calib, val, 8, precision="fp32", cache_mb=0).evaluate([a])[0] for a in archs]
    fresh = [evaluate_fresh(net, a, calib, val, 8, precision="fp32") for a in archs]
    assert trie == one_by_one == fresh
    assert len({r.loss for r in fresh}) > 3                                     # the candidates do differ


def test_cached_statistics_and_activations_across_calls_equal_fresh(net, sets):
    calib, val = sets
    first, second = candidates(net.space, 4, seed=2), candidates(net.space, 4, seed=3)
    rng = np.random.default_rng(4)
    second += [net.space.mutate(a, rng, 0.2) for a in first]                   # next "generation"
    for cache_mb in (64, 0.02):                                               # everything fits / constant eviction
        ev = Evaluator(net, calib, val, 8, precision="fp32", cache_mb=cache_mb)
        ev.evaluate(first)
        assert len(ev.cache) > 0 and ev.cache.used <= ev.cache.budget
        ev._memo.clear()                                                      # force reuse of (b) and (c), not (a)
        got = ev.evaluate(first + second)
        assert ev.cache.used <= ev.cache.budget
        assert got == [evaluate_fresh(net, a, calib, val, 8, precision="fp32") for a in first + second]


def test_memo_returns_the_same_results_without_recomputing(net, sets):
    calib, val = sets
    archs = candidates(net.space, 3)
    ev = Evaluator(net, calib, val, 8, precision="fp32", cache_mb=0)
    first = ev.evaluate(archs)
    ev._net.head.classifier.weight.data.zero_()                              # any recomputation would now differ
    assert ev.evaluate(list(reversed(archs))) == list(reversed(first))


def test_the_fitness_definition_is_fixed_when_the_evaluator_is_built(net, sets):
    calib, val = sets
    net = make_supernet()                                                     # this test changes its weights
    ev = Evaluator(net, calib, val, 8, precision="fp32", cache_mb=0)
    before = ev.definition()
    for name, value in (("mode", "approx"), ("calib_batch", 4), ("dtype", torch.bfloat16), ("val", calib)):
        with pytest.raises(AttributeError, match="part of the fitness definition"):
            setattr(ev, name, value)
    ev.eval_batch = 3                                                         # a speed knob stays free
    with pytest.raises(TypeError):
        ev.results[candidates(net.space, 1)[0]] = None                        # the memo is read-only
    with torch.no_grad():
        next(net.parameters()).add_(1.0)                                      # the caller's supernet is not the evaluator's
    assert ev.definition() == before
    assert Evaluator(net, calib, val, 8, precision="fp32").definition()["weights"] != before["weights"]


def test_recalibrated_statistics_equal_plain_recalibration(net, sets):
    calib, _ = sets
    ev = Evaluator(net, calib, sets[1], 8, precision="fp32", cache_mb=64, calib_batch=8)
    archs = candidates(net.space, 3)
    ev.evaluate(archs)                                                        # statistics now come from the cache
    for arch in archs[:3]:
        got = ev.recalibrated_subnet(arch).state_dict()
        ref = net.subnet(arch).to(memory_format=torch.channels_last)
        recalibrate_bn(ref, (model_input(calib.images[a:a + 8], torch.float32) for a in range(0, 20, 8)))
        want = ref.state_dict()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)
        # and it is not the supernet's own (trained) statistics
        assert not torch.equal(got["stem.1.running_mean"], net.stem[1].running_mean)


def test_bf16_channels_last_trie_equals_fresh(net, sets):
    calib, val = sets
    archs = candidates(net.space, 3)
    got = Evaluator(net, calib, val, 8, precision="bf16", cache_mb=16).evaluate(archs)
    want = [evaluate_fresh(net, a, calib, val, 8, precision="bf16") for a in archs]
    for g, w in zip(got, want):
        assert g.top1 == w.top1 and g.top5 == w.top5
        assert g.loss == pytest.approx(w.loss, rel=1e-3)


def test_calibration_batch_is_part_of_the_definition(net, sets):
    calib, val = sets
    arch = candidates(net.space, 1)[0]
    a = Evaluator(net, calib, val, 8, precision="fp32", calib_batch=4).evaluate([arch])[0]
    assert a == evaluate_fresh(net, arch, calib, val, 8, calib_batch=4, precision="fp32")
    # BN statistics from batches of 8 are other statistics (the mean of per-batch variances moves)...
    c = Evaluator(net, calib, val, 8, precision="fp32", calib_batch=8).evaluate([arch])[0]
    assert c.loss != a.loss
    # ...while the evaluation batch is a speed knob only: every eval batch gives the same top-1
    for eval_batch in (3, 16, 64):
        b = Evaluator(net, calib, val, eval_batch, precision="fp32", calib_batch=4).evaluate([arch])[0]
        assert a.top1 == b.top1 and a.loss == pytest.approx(b.loss, rel=1e-5)


def test_approx_mode_reuses_per_choice_statistics(net, sets):
    calib, val = sets
    archs = candidates(net.space, 4)
    ev = Evaluator(net, calib, val, 8, mode="approx", precision="fp32")
    got = ev.evaluate(archs)
    assert all(isinstance(r, Result) and 0 <= r.top1 <= 100 and np.isfinite(r.loss) for r in got)
    table = ev._approx_stats()
    L = len(net.space)
    # every (layer, choice) got statistics; the stem's are exact (no prefix before it)
    assert all((p + 1, c) in table for p in range(L) for c in range(net.space.num_choices[p]))
    exact = Evaluator(net, calib, val, 8, precision="fp32").recalibrated_subnet(archs[0])
    torch.testing.assert_close(table[0, 0]["0.1.running_mean"], exact.stem[1].running_mean)
    # deterministic: a second evaluator gives the same numbers
    assert Evaluator(net, calib, val, 8, mode="approx", precision="fp32").evaluate(archs) == got


def test_bad_arguments_are_user_errors(net, sets):
    calib, val = sets
    with pytest.raises(UserError):
        Evaluator(net, calib, val, 0)
    with pytest.raises(UserError):
        Evaluator(net, calib, val, 8, mode="fastest")
    with pytest.raises(UserError):
        Evaluator(net, calib, val, 8).evaluate([(99,) * len(net.space)])


WORKER = textwrap.dedent("""
    import json, sys, torch, numpy as np
    sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from fastnas.dist import init_distributed, cleanup
    from test_evaluate import make_supernet, candidates
    from fastnas.config import DataConfig
    from fastnas.data import build_eval_set
    from fastnas.evaluate import Evaluator
    env = init_distributed()
    cfg = DataConfig(path={sample!r}, backend="torchvision")
    calib = build_eval_set(cfg, split="calib", num_images=20, resolution=32)
    val = build_eval_set(cfg, split="val", num_images=16, resolution=32)
    net = make_supernet()
    ev = Evaluator(net, calib, val, 8, precision="fp32", cache_mb=16)
    archs = candidates(net.space, 4)
    out = [ev.evaluate(archs), ev.evaluate(archs + candidates(net.space, 3, seed=9))]   # two generations
    with open(sys.argv[1] + f".{{env.rank}}", "w") as f:
        json.dump(out, f)
    cleanup()
""")


def _torchrun(tmp_path, nproc: int) -> list:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(REPO / "tests"), sample=str(REPO / "data" / "imagenette-sample")))
    out = tmp_path / f"out{nproc}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(script), str(out)], env=env, cwd=REPO, timeout=240, capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(nproc)]


@pytest.mark.slow
def test_distributed_results_do_not_depend_on_world_size(tmp_path, net, sets):
    one = _torchrun(tmp_path, 1)
    two = _torchrun(tmp_path, 2)
    assert two[0] == two[1] == one[0]                                        # gathered on every rank, same numbers
    calib, val = sets
    local = Evaluator(net, calib, val, 8, precision="fp32").evaluate(candidates(net.space, 4))
    assert [list(r) for r in local] == one[0][0]


# ----------------------------------------------------------------------------- a space without a chain

def test_nb201_whole_subnet_fallback_equals_fresh(sets):
    """NB201's cell feeds every later cell, so no prefix can be shared: the evaluator scores each
    candidate as one whole recalibrated subnet, still exactly the plain definition, memoised."""
    from fastnas.spaces import build_supernet
    from helpers import randomize_bn
    calib, val = sets
    torch.manual_seed(0)
    net = randomize_bn(build_supernet(SpaceConfig(type="nb201", resolution=32, num_classes=10,
                                                  cell_channels=4, cells_per_stage=1)))
    assert not net.space.prefix_statistics
    archs = candidates(net.space, 4)
    ev = Evaluator(net, calib, val, 8, precision="fp32")
    got = ev.evaluate(archs)
    fresh = [evaluate_fresh(net, a, calib, val, 8, precision="fp32") for a in archs]
    assert got == fresh
    assert len(ev.results) == len(set(archs))
    assert ev.evaluate(archs[:2]) == got[:2]                 # from the memo
    sub = ev.recalibrated_subnet(archs[0])
    assert sub.training is False
    with pytest.raises(UserError, match="eval.mode=approx"):
        Evaluator(net, calib, val, 8, mode="approx")
