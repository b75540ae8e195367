"""Candidate evaluation: exact BN recalibration and accuracy with inherited weights, computed once.

    evaluator = build_evaluator(cfg, device)                 # checkpoint + decoded-once image sets
    evaluator.evaluate([arch, ...])                          # -> [Result(top1, top5, loss), ...]

Recalibration is the exact one defined in `fastnas.calibrate` (SPOS / mmrazor): every BN on the
path reset, train mode, `momentum=None` (cumulative average, never an EMA) over the calibration
set in consecutive batches of `calib_batch` images (part of the fitness definition; `eval_batch`
only sets speed); validation in eval mode with those statistics. `evaluate_fresh` is that
definition written plainly for one candidate.

Sizes: `data.calib_images` calibration images drawn from train/ with a fixed seed (default 500,
quickstart 200; OFA uses 2,000, mmrazor 4,096, SPOS 25,600 for ImageNet) and `data.val_images`
images from val/ (default 100; SPOS scores on 8,000 held-out images).

Reuse never changes a number, because the train-mode output of a layer and its recalibrated
statistics depend only on the choices up to and including that layer (its prefix):
  (a) finished results are memoised by architecture;
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
import hashlib
import sys
from collections import OrderedDict
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from fastnas.calibrate import fresh_bn_stats, recalibrate_bn
from fastnas.data import to_model_input
from fastnas.errors import UserError
from fastnas.precision import resolve_precision
from fastnas.trie import Node, build_trie

class Result(NamedTuple):
    top1: float          # percent
    top5: float          # percent
    loss: float          # mean cross-entropy
    loss_std: float = 0.0  # standard deviation of the per-image cross-entropy
    n: int = 0           # validation images


class EvalMemoryError(UserError):
    pass


def fitness_of(result: Result, kind: str = "top1") -> float:
    """The number a search maximises (`eval.fitness`): top-1 %, or minus the mean cross-entropy."""
    return result.top1 if kind == "top1" else -result.loss


def fitness_standard_error(result: Result, kind: str = "top1") -> float:
    """Standard error of `fitness_of(result, kind)` from the finite validation set: binomial for
    top-1 (in points), the per-image spread over sqrt(n) for the loss; 0 when n is unknown."""
    if result.n < 1:
        return 0.0
    if kind == "top1":
        p = result.top1 / 100.0
        return 100.0 * (p * (1.0 - p) / result.n) ** 0.5
    return result.loss_std / result.n ** 0.5


def model_input(images: torch.Tensor, dtype: torch.dtype, channels_last: bool = True, eval_set=None) -> torch.Tensor:
    """uint8 (N,H,W,3) -> normalised float (N,3,H,W) in `dtype`, channels_last or contiguous (NCHW).

    Normalised with `eval_set`'s mean and std (data.normalization) when given, else ImageNet's."""
    stats = {"mean": eval_set.mean, "std": eval_set.std} if hasattr(eval_set, "mean") else {}
    x = to_model_input(images, dtype, **stats)
    return x if channels_last else x.contiguous()


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e)))


class _Score:
    """Running top-1 / top-5 counts and summed cross-entropy over validation chunks."""

    def __init__(self):
        self.top1 = self.top5 = self.loss = self.loss_sq = 0.0
        self.n = 0

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        logits = logits.float()
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices == labels[:, None]
        self.top1 += hit[:, 0].sum().item()
        self.top5 += hit.any(dim=1).sum().item()
        per_image = F.cross_entropy(logits, labels, reduction="none").double()
        self.loss += per_image.sum().item()
        self.loss_sq += per_image.square().sum().item()
        self.n += labels.numel()

    def result(self) -> Result:
        mean = self.loss / self.n
        std = max(self.loss_sq / self.n - mean * mean, 0.0) ** 0.5
        return Result(100.0 * self.top1 / self.n, 100.0 * self.top5 / self.n, mean, std, self.n)


class _LRUCache:
    """Tensors (or dicts of tensors) by key, at most `budget` bytes, least recently used evicted first."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.used = 0
        self._items: OrderedDict = OrderedDict()

    @staticmethod
    def _size(value) -> int:
        tensors = value.values() if isinstance(value, dict) else (value,)
        return sum(t.numel() * t.element_size() for t in tensors)

    def get(self, key):
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key, value) -> None:
        size = self._size(value)
        if size > self.budget:
            return
        if key in self._items:
            self.used -= self._size(self._items.pop(key))
        self._items[key] = value
        self.used += size
        while self.used > self.budget:
            _, old = self._items.popitem(last=False)
            self.used -= self._size(old)

    def drop(self, keep: Callable[[tuple], bool]) -> None:
        for key in [k for k in self._items if not keep(k)]:
            self.used -= self._size(self._items.pop(key))

    def __len__(self) -> int:
        return len(self._items)


class Evaluator:
    """Scores architectures of `supernet` with inherited weights after exact BN recalibration.

    calib_set / val_set: objects with `images` (uint8 N,H,W,3) and `labels` (int64 N) on the
    supernet's device (`fastnas.data.build_eval_set`). The supernet is copied; it is not modified.
    """

    def __init__(self, supernet, calib_set, val_set, eval_batch: int, mode: str = "exact",
                 precision: str = "auto", cache_mb: float = 2048, *, calib_batch: int = 256,
                 channels_last: bool = True, approx_rounds: int = 1, seed: int = 0):
        if mode not in ("exact", "approx"):
            raise UserError(f"eval.mode: {mode!r} is not allowed (allowed: exact, approx)")
        if eval_batch < 1 or calib_batch < 1 or approx_rounds < 1:
            raise UserError("eval.eval_batch, eval.calib_batch and eval.approx_rounds must be >= 1")
        self.device = next(supernet.parameters()).device
        self.net = copy.deepcopy(supernet).eval().requires_grad_(False)
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        for m in self.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None
        self.space = self.net.space
        if mode == "approx" and not self.space.prefix_statistics:
            raise UserError(f"eval.mode=approx needs per-layer statistics that depend only on earlier layers; "
                            f"{type(self.space).__name__} shares one cell everywhere: use eval.mode=exact")
        self.calib, self.val = calib_set, val_set
        self.eval_batch = eval_batch
        self.calib_batch = calib_batch
        self.mode = mode
        self.dtype = resolve_precision(precision, self.device)
        self.approx_rounds, self.seed = approx_rounds, seed
        self.cache = _LRUCache(int(cache_mb * 2 ** 20))
        self.memo: dict[tuple[int, ...], Result] = {}
        self._approx_table: dict | None = None
        self._scratch: dict = {}
        # A chain space runs a path one step at a time (step 0: stem, 1..L: positions, L+1: head) so
        # candidates share prefixes; any other space is recalibrated and scored one whole subnet at a time.
        self._modules = self.net.chain_steps() if self.space.prefix_statistics else None

    # ------------------------------------------------------------------ public API
    def definition(self, fitness: str = "top1") -> dict:
        """What every fitness value this evaluator gives depends on, as plain data: a search resumed
        into a folder whose results came from another definition would mix incomparable numbers.
        The weights and the two image sets enter as digests; eval_batch, cache and layout do not
        (they change speed, not results)."""
        weights = hashlib.sha256()
        for name, tensor in sorted(self.net.state_dict().items()):
            weights.update(name.encode())
            weights.update(tensor.detach().contiguous().cpu().numpy().tobytes())
        out = {"weights": weights.hexdigest()[:16], "fitness": fitness, "mode": self.mode,
               "precision": str(self.dtype).replace("torch.", ""), "calib_batch": self.calib_batch}
        for name, eval_set in (("calib", self.calib), ("val", self.val)):
            digest = hashlib.sha256(eval_set.labels.cpu().numpy().tobytes())
            if eval_set.files:
                digest.update("\n".join(str(f) for f in eval_set.files).encode())
            else:                                       # synthetic: the pixels themselves
                digest.update(eval_set.images.cpu().numpy().tobytes())
            digest.update(repr((tuple(eval_set.images.shape), eval_set.mean, eval_set.std)).encode())
            out[f"{name}_images"] = len(eval_set)
            out[f"{name}_set"] = digest.hexdigest()[:16]
        if self.mode == "approx":
            out["approx_rounds"] = self.approx_rounds
        return out

    def evaluate(self, archs: Sequence[Sequence[int]]) -> list[Result]:
        """Results in the order of `archs` (duplicates and earlier candidates come from the memo)."""
        archs = [self.space.validate(a) for a in archs]
        todo = sorted({a for a in archs if a not in self.memo})
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
        self.memo.update(done)
        return [self.memo[a] for a in archs]

    def recalibrated_subnet(self, arch: Sequence[int]) -> nn.Module:
        """A standalone network of `arch` with its exactly recalibrated BN statistics, in eval mode."""
        arch = self.space.validate(arch)
        if self._modules is None:
            return self._recalibrate_whole(arch)
        path = self._path(arch)
        stats = self._calibrate(build_trie([path]))
        sub = self.net.subnet(arch).eval()
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
        return recalibrated_subnet(self.net, arch, self.calib, self.calib_batch, self.dtype, self.channels_last)

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
        return _autocast(self.device, self.dtype)

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
                                       _chunks(len(self.calib.labels), self.calib_batch))
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
        self.net.train()
        try:
            with torch.inference_mode(), self._autocast():
                for a, b in chunks:
                    images = _lazy(lambda: self._input(self.calib, a, b))
                    for child in root.children.values():
                        if child.key in needs:
                            self._calibrate_node(child, (a, b), images, stats, pending, needs, ns)
        finally:
            self.net.eval()

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
            scores = {leaf: _Score() for node in root.walk() for leaf in node.leaf_of}
            try:
                with torch.inference_mode(), self._autocast():
                    for a, b in _chunks(len(self.val.labels), batch):
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
            for chunk in _chunks(len(self.calib.labels), self.calib_batch):
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


# ----------------------------------------------------------------------------- the plain reference

def evaluate_fresh(supernet, arch: Sequence[int], calib_set, val_set, eval_batch: int, *,
                   calib_batch: int = 256, precision: str = "auto", channels_last: bool = True) -> Result:
    """One candidate from scratch, no reuse: its standalone subnet, `recalibrate_bn`, then accuracy.

    The definition the Evaluator must reproduce; tests compare the two. Spaces without a chain of
    layers (`prefix_statistics` False) are evaluated this very way, one candidate at a time.
    """
    device = next(supernet.parameters()).device
    dtype = resolve_precision(precision, device)
    net = recalibrated_subnet(supernet, arch, calib_set, calib_batch, dtype, channels_last)
    return score_network(net, val_set, eval_batch, dtype, channels_last)


def _autocast(device: torch.device, dtype: torch.dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


@torch.no_grad()
def recalibrated_subnet(supernet, arch: Sequence[int], calib_set, calib_batch: int, dtype: torch.dtype,
                        channels_last: bool) -> nn.Module:
    """The standalone subnet of `arch`, exactly recalibrated (`recalibrate_bn`) over `calib_set`, in eval mode."""
    device = next(supernet.parameters()).device
    net = supernet.subnet(arch)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    with _autocast(device, dtype):
        recalibrate_bn(net, (model_input(calib_set.images[a:b], dtype, channels_last, calib_set)
                             for a, b in _chunks(len(calib_set.labels), calib_batch)))
    return net


@torch.no_grad()
def score_network(net: nn.Module, val_set, eval_batch: int, dtype: torch.dtype, channels_last: bool) -> Result:
    """Top-1, top-5 and mean cross-entropy of `net` (eval mode) on `val_set`."""
    device = next(net.parameters()).device
    score = _Score()
    with _autocast(device, dtype):
        for a, b in _chunks(len(val_set.labels), eval_batch):
            score.add(net(model_input(val_set.images[a:b], dtype, channels_last, val_set)), val_set.labels[a:b])
    return score.result()


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
