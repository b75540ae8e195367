"""Candidate evaluation: exact BN recalibration and accuracy with inherited weights, computed once.

    evaluator = build_evaluator(cfg, device)                 # checkpoint + decoded-once image sets
    evaluator.evaluate([arch, ...])                          # -> [Result(top1, top5, loss), ...]

Recalibration is the exact one defined in `fastnas.calibrate` (SPOS / mmrazor): every BN on the
path reset, train mode, `momentum=None` (cumulative average, never an EMA) over the calibration
set in consecutive batches of `calib_batch` images (part of the fitness definition; `eval_batch`
only sets speed); validation in eval mode with those statistics. `fastnas.fitness.evaluate_fresh`
is that definition written plainly for one candidate.

Sizes: `data.calib_images` calibration images drawn from train/ with a fixed seed (default 500,
quickstart 200; OFA uses 2,000, mmrazor 4,096, SPOS 25,600 for ImageNet) and `data.val_images`
images from val/ (default 100; SPOS scores on 8,000 held-out images).

Reuse never changes a number, because the train-mode output of a layer and its recalibrated
statistics depend only on the choices up to and including that layer (its prefix):
  (a) finished results are memoised by architecture: an Evaluator's definition (weights, mode,
      precision, image sets, calibration batch) is fixed when it is built, so a memo never
      outlives the definition its results came from;
  (b) each layer's statistics are cached keyed by its prefix, across calls (generations);
  (c) a batch of candidates is evaluated by walking the trie of their paths depth first, one
      chunk of images at a time, so a shared prefix is computed once per chunk; the walk's
      activations are cached by (prefix, chunk) too.
Statistics and activations share one LRU cache bounded by `cache_mb`.

`mode='approx'` gathers per-(layer, choice) statistics once, over random (strictly fair) paths,
and reuses them for every candidate: no calibration pass per candidate. Its ranking fidelity
against exact mode is measured by bench/bench_eval.py (Kendall tau); exact is the default.

Distributed: under torchrun, `evaluate` shards the new candidates across ranks and gathers the
results on every rank; each candidate's numbers are computed the same way whatever the world
size. All ranks must call `evaluate` with the same list.
"""
from __future__ import annotations

import copy
import sys
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call

from fastnas.calibrate import fresh_bn_stats
from fastnas.errors import UserError
from fastnas.fitness import (Result, Score, autocast, chunks, describe_fitness, model_input,
                             recalibrated_subnet, score_network)
from fastnas.lru_cache import LRUCache
from fastnas.precision import resolve_precision
from fastnas.trie import Node, build_trie

class EvalMemoryError(UserError):
    pass


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e)))


class Evaluator:
    """Scores architectures of `supernet` with inherited weights after exact BN recalibration.

    calib_set / val_set: objects with `images` (uint8 N,H,W,3) and `labels` (int64 N) on the
    supernet's device (`fastnas.data.build_eval_set`). The supernet is copied; it is not modified.

    Everything the fitness depends on is fixed at construction: the weights are a private copy,
    the defining settings cannot be reassigned, and `definition()` is taken then. So the memo of
    results by architecture, and the statistics cache, always belong to one definition.
    """

    _DEFINING = frozenset({"space", "mode", "dtype", "calib", "val", "calib_batch", "approx_rounds", "seed"})

    def __setattr__(self, name, value):
        if name in self._DEFINING and name in self.__dict__:
            raise AttributeError(f"Evaluator.{name} is part of the fitness definition, fixed when the "
                                 f"Evaluator is built: build a new one")
        super().__setattr__(name, value)

    def __init__(self, supernet, calib_set, val_set, eval_batch: int, mode: str = "exact",
                 precision: str = "auto", cache_mb: float = 2048, *, calib_batch: int = 256,
                 channels_last: bool = True, approx_rounds: int = 1, seed: int = 0):
        if mode not in ("exact", "approx"):
            raise UserError(f"eval.mode: {mode!r} is not allowed (allowed: exact, approx)")
        if eval_batch < 1 or calib_batch < 1 or approx_rounds < 1:
            raise UserError("eval.eval_batch, eval.calib_batch and eval.approx_rounds must be >= 1")
        self.device = next(supernet.parameters()).device
        self._net = copy.deepcopy(supernet).eval().requires_grad_(False)
        self.channels_last = channels_last
        if channels_last:
            self._net = self._net.to(memory_format=torch.channels_last)
        for m in self._net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        self.space = self._net.space
        if mode == "approx" and not self.space.prefix_statistics:
            raise UserError(f"eval.mode=approx needs per-layer statistics that depend only on earlier layers; "
                            f"{type(self.space).__name__} shares one cell everywhere: use eval.mode=exact")
        self.calib, self.val = calib_set, val_set
        self.eval_batch = eval_batch
        self.calib_batch = calib_batch
        self.mode = mode
        self.dtype = resolve_precision(precision, self.device)
        self.approx_rounds, self.seed = approx_rounds, seed
        self.cache = LRUCache(int(cache_mb * 2 ** 20))
        self._memo: dict[tuple[int, ...], Result] = {}
        self._definition = describe_fitness(self._net, mode=mode, dtype=self.dtype, calib=calib_set, val=val_set,
                                            calib_batch=calib_batch, approx_rounds=approx_rounds, seed=seed)
        self._approx_table: dict | None = None
        self._scratch: dict = {}
        # A chain space runs a path one step at a time (step 0: stem, 1..L: positions, L+1: head) so
        # candidates share prefixes; any other space is recalibrated and scored one whole subnet at a time.
        self._modules = self._net.chain_steps() if self.space.prefix_statistics else None

    # ------------------------------------------------------------------ public API
    def definition(self, fitness: str = "top1") -> dict:
        """What every fitness value this evaluator gives depends on, as plain data: a search resumed
        into a folder whose results came from another definition would mix incomparable numbers.
        The weights and the two image sets enter as digests; eval_batch, cache and layout do not
        (they change speed, not results)."""
        return {**self._definition, "fitness": fitness}

    @property
    def results(self) -> Mapping[tuple[int, ...], Result]:
        """Every architecture scored so far (read-only), under this evaluator's one definition."""
        return MappingProxyType(self._memo)

    def evaluate(self, archs: Sequence[Sequence[int]]) -> list[Result]:
        """Results in the order of `archs` (duplicates and earlier candidates come from the memo)."""
        archs = [self.space.validate(a) for a in archs]
        todo = sorted({a for a in archs if a not in self._memo})
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        mine = todo[rank * len(todo) // world:(rank + 1) * len(todo) // world]
        failure = None
        try:
            done = dict(zip(mine, self._evaluate_new(mine))) if mine else {}
        except Exception as e:               # every rank must still reach the gather, or the others hang
            if world == 1 or not todo:
                raise
            done, failure = {}, e
        if world > 1 and todo:
            shards = [None] * world
            dist.all_gather_object(shards, (done, None if failure is None else f"{type(failure).__name__}: {failure}"))
            if failure is not None:
                raise failure
            failed = [(r, msg) for r, (_, msg) in enumerate(shards) if msg]
            if failed:
                raise UserError(f"candidate evaluation failed on rank {failed[0][0]}: {failed[0][1]}")
            done = {a: Result(*r) for shard, _ in shards for a, r in shard.items()}
        self._memo.update(done)
        return [self._memo[a] for a in archs]

    def recalibrated_subnet(self, arch: Sequence[int]) -> nn.Module:
        """A standalone network of `arch` with its exactly recalibrated BN statistics, in eval mode."""
        arch = self.space.validate(arch)
        if self._modules is None:
            return self._recalibrate_whole(arch)
        path = self._path(arch)
        stats = self._calibrate(build_trie([path]))
        sub = self._net.subnet(arch).eval()
        for p, module in enumerate(sub.chain_steps()):
            for name, value in stats[path[:p + 1]].items():
                module.get_buffer(name).copy_(value)
        return sub

    # ------------------------------------------------------------------ the two modes
    def _evaluate_new(self, archs: list[tuple[int, ...]]) -> list[Result]:
        if self._modules is None:
            return [self._score_whole(self._recalibrate_whole(a)) for a in archs]
        root = build_trie([self._path(a) for a in archs])
        if self.mode == "exact":
            stats = self._calibrate(root)
            scores = self._validate(root, lambda node: stats[node.key], "val")
        else:
            table = self._approx_stats()
            scores = self._validate(root, lambda node: table[node.depth, node.choice], "val~")
        return [scores[self._path(a)] for a in archs]

    @staticmethod
    def _path(arch: tuple[int, ...]) -> tuple[int, ...]:
        return (0,) + arch + (0,)

    # ------------------------------------------------------------------ spaces without a chain: one whole subnet
    def _recalibrate_whole(self, arch: tuple[int, ...]) -> nn.Module:
        return recalibrated_subnet(self._net, arch, self.calib, self.calib_batch, self.dtype, self.channels_last)

    def _score_whole(self, net: nn.Module) -> Result:
        return score_network(net, self.val, self.eval_batch, self.dtype, self.channels_last)

    def _input(self, eval_set, a: int, b: int) -> torch.Tensor:
        return model_input(eval_set.images[a:b], self.dtype, self.channels_last, eval_set)

    # ------------------------------------------------------------------ one step of a path
    def _run(self, node: Node, x: torch.Tensor, stats: dict, train: bool) -> torch.Tensor:
        """Step `node` on `x` with its BN statistics bound (train mode updates them in place)."""
        module = self._modules[node.depth][node.choice]
        return functional_call(module, stats, x) if stats else module(x)

    def _fresh(self, node: Node) -> dict:
        return fresh_bn_stats(self._modules[node.depth][node.choice])

    def _scratch_stats(self, node: Node) -> dict:
        """Throw-away statistics for a train-mode step whose real statistics are already final."""
        key = (node.depth, node.choice)
        if key not in self._scratch:
            self._scratch[key] = self._fresh(node)
        return self._scratch[key]

    def _cacheable(self, node: Node) -> bool:
        return bool(node.children) and bool(self._scratch_stats(node))     # skip steps cost nothing

    def _autocast(self):
        return autocast(self.device, self.dtype)

    # ------------------------------------------------------------------ calibration (train mode)
    def _calibrate(self, root: Node) -> dict[tuple, dict]:
        """Final statistics of every node of the trie, from the cache or by one trie walk."""
        stats, pending = {}, set()
        for node in root.walk():
            if node is root:
                continue
            cached = self.cache.get(("stats", node.key))
            stats[node.key] = cached if cached is not None else self._fresh(node)
            if cached is None:
                pending.add(node.key)
        if not pending:
            return stats
        needs = set()
        for node in reversed(list(root.walk())):        # children before parents
            if node.key in pending or any(c.key in needs for c in node.children.values()):
                needs.add(node.key)
        for attempt in range(2):
            try:
                self._calibration_pass(root, stats, pending, needs, "calib",
                                       chunks(len(self.calib.labels), self.calib_batch))
                break
            except Exception as e:
                if not _is_oom(e):
                    raise
                for key in pending:                       # half-accumulated: start again
                    stats[key] = self._fresh(self._node_at(root, key))
                self.cache.drop(lambda k: k[0] == "stats")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if attempt == 1:
                    raise EvalMemoryError(
                        f"a calibration batch of {self.calib_batch} images does not fit in memory on "
                        f"{self.device}; lower eval.calib_batch (it changes the fitness: start the search afresh)") from None
        for key in pending:
            self.cache.put(("stats", key), stats[key])
        return stats

    @staticmethod
    def _node_at(root: Node, key: tuple) -> Node:
        node = root
        for c in key:
            node = node.children[c]
        return node

    def _calibration_pass(self, root, stats, pending, needs, ns, chunks) -> None:
        """One walk of the trie per calibration chunk, accumulating the `pending` nodes' statistics."""
        self._net.train()
        try:
            with torch.inference_mode(), self._autocast():
                for a, b in chunks:
                    images = _lazy(lambda: self._input(self.calib, a, b))
                    for child in root.children.values():
                        if child.key in needs:
                            self._calibrate_node(child, (a, b), images, stats, pending, needs, ns)
        finally:
            self._net.eval()

    def _calibrate_node(self, node, chunk, get_input, stats, pending, needs, ns) -> None:
        key = (ns, node.key, chunk)
        cacheable = ns is not None and self._cacheable(node)
        if node.key in pending:                 # accumulate: this chunk must pass through this step
            out = self._run(node, get_input(), stats[node.key], train=True)
            if cacheable:
                self.cache.put(key, out)
            get_output = lambda: out
        else:                                   # final already: only its output is wanted, if at all
            def compute():
                hit = self.cache.get(key) if cacheable else None
                if hit is None:
                    hit = self._run(node, get_input(), self._scratch_stats(node), train=True)
                    if cacheable:
                        self.cache.put(key, hit)
                return hit
            get_output = _lazy(compute)
        for child in node.children.values():
            if child.key in needs:
                self._calibrate_node(child, chunk, get_output, stats, pending, needs, ns)

    # ------------------------------------------------------------------ validation (eval mode)
    def _validate(self, root: Node, stats_of: Callable[[Node], dict], ns: str) -> dict[tuple, Result]:
        batch = self.eval_batch
        while True:
            scores = {leaf: Score() for node in root.walk() for leaf in node.leaf_of}
            try:
                with torch.inference_mode(), self._autocast():
                    for a, b in chunks(len(self.val.labels), batch):
                        images = _lazy(lambda: self._input(self.val, a, b))
                        for child in root.children.values():
                            self._validate_node(child, (a, b), images, stats_of, ns, scores)
                return {leaf: s.result() for leaf, s in scores.items()}
            except Exception as e:
                if not _is_oom(e):
                    raise
                self.cache.drop(lambda k: k[0] == "stats")
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch == 1:
                    raise EvalMemoryError(f"evaluating even one image at a time does not fit in memory "
                                          f"on {self.device}; lower eval.cache_mb or use a smaller model") from None
                batch = max(1, batch // 2)
                print(f"fastnas: warning: evaluation batch does not fit in memory on {self.device}; "
                      f"splitting it into batches of {batch}", file=sys.stderr, flush=True)

    def _validate_node(self, node, chunk, get_input, stats_of, ns, scores) -> None:
        if not node.children:                   # the head: logits of every architecture ending here
            logits = self._run(node, get_input(), stats_of(node), train=False)
            labels = self.val.labels[chunk[0]:chunk[1]]
            for leaf in node.leaf_of:
                scores[leaf].add(logits, labels)
            return
        key = (ns, node.key, chunk)
        cacheable = self._cacheable(node)

        def compute():
            hit = self.cache.get(key) if cacheable else None
            if hit is None:
                hit = self._run(node, get_input(), stats_of(node), train=False)
                if cacheable:
                    self.cache.put(key, hit)
            return hit
        get_output = _lazy(compute)
        for child in node.children.values():
            self._validate_node(child, chunk, get_output, stats_of, ns, scores)

    # ------------------------------------------------------------------ approximate statistics
    def _approx_stats(self) -> dict[tuple[int, int], dict]:
        """Per-(step, choice) statistics, accumulated once over strictly fair random paths.

        Every calibration batch goes through max-choices paths whose choices at each layer are a
        random permutation (filled at random where a layer has fewer choices), so every choice of
        every layer sees every batch; a step's statistics average over all the paths that used it.
        """
        if self._approx_table is not None:
            return self._approx_table
        rng = np.random.default_rng(self.seed)
        n = self.space.max_choices
        table: dict[tuple[int, int], dict] = {}
        for _ in range(self.approx_rounds):
            for chunk in chunks(len(self.calib.labels), self.calib_batch):
                columns = [rng.permutation(np.concatenate([np.arange(m), rng.integers(m, size=n - m)]))
                           for m in self.space.num_choices]
                root = build_trie([self._path(tuple(int(col[j]) for col in columns)) for j in range(n)])
                stats = {node.key: table.setdefault((node.depth, node.choice), self._fresh(node))
                         for node in root.walk() if node is not root}
                self._calibration_pass(root, stats, set(stats), set(stats), None, [chunk])
        self._approx_table = table
        return table


def _lazy(fn):
    """`fn` computed on the first call and remembered."""
    box = []

    def get():
        if not box:
            box.append(fn())
        return box[0]
    return get


# ----------------------------------------------------------------------------- front door

def build_evaluator(cfg, device, checkpoint_path=None) -> Evaluator:
    """Load the supernet checkpoint, decode the calibration and validation sets once, return an Evaluator.

    The space comes from the checkpoint (the weights fix it); data and eval settings from `cfg`.
    """
    from fastnas.checkpoint import load_supernet
    from fastnas.data import build_eval_set, check_num_classes

    device = torch.device(device)
    supernet, ckpt_cfg = load_supernet(checkpoint_path or cfg.eval.checkpoint, device)
    check_num_classes(cfg.data, ckpt_cfg.space.num_classes)
    resolution = ckpt_cfg.space.resolution
    calib = build_eval_set(cfg.data, split="calib", num_images=cfg.data.calib_images,
                           resolution=resolution, device=device, seed=0)
    val = build_eval_set(cfg.data, split="val", num_images=cfg.data.val_images,
                         resolution=resolution, device=device, seed=0)
    e = cfg.eval
    return Evaluator(supernet, calib, val, e.eval_batch, mode=e.mode, precision=e.precision,
                     cache_mb=e.cache_mb, calib_batch=e.calib_batch, approx_rounds=e.approx_rounds)
