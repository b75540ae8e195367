"""NVIDIA DALI backend: decode, crop and flip in DALI's C++ thread pool.

With CUDA, JPEGs are decoded on the GPU (`device='mixed'`: nvJPEG, the hardware decoder
where present), resized there, and `crop_mirror_normalize` writes normalised NHWC
(channels-last) batches in the training dtype straight into GPU memory.

Without a GPU, DALI runs CPU-only: `device_id=None` (any device id fails without CUDA, even
`types.CPU_ONLY_DEVICE_ID`) and no 'mixed' operators. There the pipeline stops at uint8 NHWC
and `TrainLoader` normalises (4x fewer bytes leave DALI).

One pipeline serves the loader's whole life: it is built on first use and fed through
`external_source` (the encoded bytes, and each image's crop window and flip), so an epoch does
not rebuild it (on a GPU that would re-initialise nvJPEG and its memory pools). The windows are
drawn per file in Python (`fastnas.data.augment`, the same windows the torchvision backend cuts;
the image size comes from its header), so reading can start anywhere in an epoch's file order:
a mid-epoch resume slices the order instead of decoding the skipped batches. Runs are scheduled
`DEPTH` ahead; a consumer that stops early (the last step of a run) has the runs still in flight
drained, so the next epoch starts clean.

Per image: `decoders.image_slice` decodes only the crop window; `resize` to res x res (linear,
no antialias) flips the image for free through a reversed region of interest (a separate `flip`
cost ~100 us an image here). With `data.augment=pad_crop` (CIFAR): the whole image is decoded
and fitted to res x res (shorter side resized, centre crop: both no-ops for 32x32 at 32), then
`slice` takes a res x res window at the drawn offset in [-PAD, PAD] per axis, zero-filling what
lies outside the image (the padded crop without materialising the padding); the flip is `flip`
(on the GPU, `crop_mirror_normalize`'s mirror, fused with normalising).

Every file was pre-scanned (folder.py), so DALI never sees one that would kill its pipeline;
should one slip through anyway, the error is one line naming the remedy.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch

from fastnas.data.augment import draw_crop, sample_rng
from fastnas.data.folder import DataError, SplitScan, image_size
from fastnas.data.loader import EVAL_CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD, resize_hwc, single_threaded

try:
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import feed_ndarray
    AVAILABLE = True
except ImportError:                     # DALI is optional: the torchvision backend needs nothing more
    AVAILABLE = False

_GPU_DTYPES = {torch.float32: "FLOAT", torch.float16: "FLOAT16"}
DEPTH = 2                               # runs scheduled ahead of the consumer


def _dali_device_id(device: torch.device):
    return device.index if device.index is not None else torch.cuda.current_device() if device.type == "cuda" else None


class DaliTrainBatches:
    """`make_batches` for TrainLoader: yields one rank's batches of the file order it is given."""

    def __init__(self, scan: SplitScan, *, batch_size: int, resolution: int, threads: int, seed: int,
                 device: torch.device, dtype: torch.dtype, resize_in_torch: bool = False,
                 augment: str = "random_resized_crop", mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if not AVAILABLE:
            raise DataError("data.backend=dali but nvidia-dali is not installed (pip install nvidia-dali-cuda120, "
                            "or use data.backend=torchvision)")
        self.scan, self.batch_size, self.resolution = scan, batch_size, resolution
        self.threads, self.seed = max(1, threads), seed
        self.device, self.dtype = torch.device(device), dtype
        self.augment, self.mean, self.std = augment, list(mean), list(std)
        self.on_gpu = self.device.type == "cuda"
        # On the GPU normalise inside DALI when it can write the training dtype (not bf16).
        self.normalized = self.on_gpu and dtype in _GPU_DTYPES
        # Alternative on a CPU: DALI decodes the crop and torch resizes it. Alone, torch's uint8
        # resize costs ~200 us an image against DALI's ~650 us, but end to end (Python per-crop
        # loop, thread pool) it measured no faster (bench/RESULTS.md), so DALI resizes by default.
        self.resize_in_torch = bool(resize_in_torch) and not self.on_gpu and augment == "random_resized_crop"
        self._pool: ThreadPoolExecutor | None = None          # reads the files
        self._resize_pool: ThreadPoolExecutor | None = None
        self._pipe = None
        self._active = None             # the open iteration, if any
        self._primed = False            # the first schedule_run of a pipeline prefetches DEPTH runs
        self.builds = 0                 # pipelines built so far (one per loader, unless DALI failed)

    def _pipeline(self):
        if self._pipe is not None:
            return self._pipe
        res, on_gpu, normalized, resize_in_torch = self.resolution, self.on_gpu, self.normalized, self.resize_in_torch
        out_dtype = getattr(types, _GPU_DTYPES.get(self.dtype, "FLOAT"))
        pad_crop, mean, std = self.augment == "pad_crop", self.mean, self.std
        decode_on = "mixed" if on_gpu else "cpu"

        @pipeline_def(batch_size=self.batch_size, num_threads=self.threads, device_id=_dali_device_id(self.device),
                      prefetch_queue_depth=DEPTH)
        def train_pipe():
            jpegs = fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1)
            anchor = fn.external_source(name="anchor", dtype=types.FLOAT, ndim=1)      # x, y
            shape = fn.external_source(name="shape", dtype=types.FLOAT, ndim=1)        # width, height
            flip = fn.external_source(name="flip", dtype=types.INT32, ndim=0)
            if pad_crop:                  # whole image, window at the drawn offset (zeros outside), flip
                images = _fit(fn.decoders.image(jpegs, device=decode_on, output_type=types.RGB,
                                                adjust_orientation=False), res, 1.0)
                images = fn.slice(images, start=fn.cast(anchor, dtype=types.INT32),
                                  shape=fn.cast(shape, dtype=types.INT32), axis_names="WH",
                                  out_of_bounds_policy="pad", fill_values=0)
                if normalized:
                    return fn.crop_mirror_normalize(images, dtype=out_dtype, output_layout="HWC", mirror=flip,
                                                    mean=mean, std=std)
                return fn.flip(images, horizontal=flip)
            # Decode only the crop's window, then resize it to res x res.
            images = fn.decoders.image_slice(jpegs, anchor, shape, device=decode_on, output_type=types.RGB,
                                             axis_names="WH", normalized_anchor=False, normalized_shape=False,
                                             adjust_orientation=False)
            if resize_in_torch:
                return images
            # A flipped region of interest (start > end) makes the resize flip the image for free.
            f = fn.cast(flip, dtype=types.FLOAT)
            images = fn.resize(images, resize_x=res, resize_y=res, interp_type=types.INTERP_LINEAR,
                               antialias=False, roi_relative=True,
                               roi_start=fn.stack(0.0 * f, f), roi_end=fn.stack(0.0 * f + 1.0, 1.0 - f))
            if normalized:
                images = fn.crop_mirror_normalize(images, dtype=out_dtype, output_layout="HWC", mean=mean, std=std)
            return images

        self._pipe = train_pipe()
        self._pipe.build()
        self._primed = False
        self.builds += 1
        return self._pipe

    def _feed(self, pipe, idx: np.ndarray, epoch: int) -> np.ndarray:
        """Hand DALI one batch: the files' bytes (read by `threads` threads) and their crops. Returns
        the flips. A failure leaves a half-fed pipeline, so it is dropped."""
        try:
            files = [self.scan.files[i] for i in idx]
            data = list(self._threads().map(_read_bytes, files))
            res = self.resolution
            crops = [draw_crop(self.augment, sample_rng(self.seed, epoch, i),
                               *((res, res) if self.augment == "pad_crop" else image_size(d, f)))
                     for i, d, f in zip(idx, data, files)]
            pipe.feed_input("jpegs", data)
            pipe.feed_input("anchor", [np.array([c.left, c.top], np.float32) for c in crops])
            pipe.feed_input("shape", [np.array([c.width, c.height], np.float32) for c in crops])
            flips = np.array([c.flip for c in crops], np.int32)
            if not self.resize_in_torch:            # there torch flips; DALI pruned the unused input
                pipe.feed_input("flip", list(flips))
            return flips
        except BaseException:
            self._pipe = None
            raise

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fastnas-dali-feed")
        return self._pool

    def __call__(self, order: np.ndarray, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = [order[k * self.batch_size:(k + 1) * self.batch_size] for k in range(len(order) // self.batch_size)]
        if not batches:
            return
        if self._active is not None:            # an earlier iteration is still open: its runs are in
            self._pipe = None                   # the pipeline, so this one gets a pipeline of its own
        token = self._active = object()
        pipe = self._pipeline()
        # The first schedule_run of a pipeline prefetches DEPTH runs: feed them all first (a
        # shorter first stretch is padded with its last batch, whose extra runs are drained).
        feeds = batches + [batches[-1]] * (DEPTH - len(batches) if not self._primed else 0)
        in_flight = 0
        try:
            flips = [self._feed(pipe, idx, epoch) for idx in feeds[:DEPTH]]
            for _ in range(1 if not self._primed else len(flips)):
                self._schedule(pipe)
            self._primed = True
            in_flight = len(flips)
            for k, idx in enumerate(batches):
                (images,) = self._outputs(pipe)
                in_flight -= 1
                labels = torch.tensor([self.scan.labels[i] for i in idx], dtype=torch.int64)
                copied = None
                try:
                    if self.resize_in_torch:
                        yield self._resize_crops(images, flips[k]), labels
                    else:
                        batch, copied = self._images_to_torch(images)
                        yield batch, labels
                finally:
                    if copied is not None:      # the copy out of DALI's buffer runs on torch's stream
                        copied.synchronize()
                    pipe.release_outputs()
                if len(flips) < len(feeds):
                    flips.append(self._feed(pipe, feeds[len(flips)], epoch))
                    self._schedule(pipe)
                    in_flight += 1
        finally:
            if self._active is token:
                self._active = None
            if self._pipe is pipe:              # drain what is still scheduled (the pipeline is reused)
                for _ in range(in_flight):
                    self._outputs(pipe)
                    pipe.release_outputs()

    def _schedule(self, pipe) -> None:
        try:
            pipe.schedule_run()
        except RuntimeError as e:
            self._failed(e)

    def _outputs(self, pipe):
        try:
            return pipe.share_outputs()
        except RuntimeError as e:
            self._failed(e)

    def _failed(self, e: RuntimeError):
        self._pipe = None                       # DALI invalidates a pipeline after a critical error
        raise DataError(f"DALI could not decode a file under {self.scan.root / self.scan.split} ({_reason(e)}); "
                        f"run `python -m fastnas.data check {self.scan.root} --decode` to find it") from None

    def close(self) -> None:
        """Release the pipeline (and, on a GPU, its decoder and memory pools) and the threads."""
        self._pipe = None
        for pool in (self._pool, self._resize_pool):
            if pool is not None:
                pool.shutdown()
        self._pool = self._resize_pool = None

    def _resize_crops(self, crops, flips: np.ndarray) -> torch.Tensor:
        """Resize DALI's variable-size uint8 crops to one (B, res, res, 3) batch with torch."""
        res = self.resolution
        out = torch.empty((len(crops), res, res, 3), dtype=torch.uint8)

        def resize(part: range) -> None:
            for i in part:
                crop = torch.from_numpy(np.asarray(crops[i]))          # (h, w, 3), a view of DALI's buffer
                out[i] = resize_hwc(crop.permute(2, 0, 1), res, res, flip=bool(flips[i]))

        # `threads` Python threads (torch releases the GIL), each op on one OpenMP thread.
        if self._resize_pool is None:
            self._resize_pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fastnas-resize")
        parts = [range(k, len(crops), self.threads) for k in range(self.threads)]
        with single_threaded():
            list(self._resize_pool.map(resize, parts))
        return out

    def _images_to_torch(self, images) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """The batch as a torch tensor, and on a GPU the event after which DALI's buffer is free."""
        if self.on_gpu:
            tensor = images.as_tensor()
            dtype = self.dtype if self.normalized else torch.uint8
            out = torch.empty(tensor.shape(), dtype=dtype, device=self.device)
            stream = torch.cuda.current_stream(self.device)
            feed_ndarray(tensor, out, cuda_stream=stream)
            return out, stream.record_event()
        # Zero-copy view of DALI's buffer, valid until the consumer asks for the next batch
        # (release_outputs): TrainLoader normalises it before that.
        return torch.from_numpy(np.asarray(images.as_tensor())), None


def _read_bytes(path: str) -> np.ndarray:
    return np.fromfile(path, dtype=np.uint8)


def _reason(e: Exception) -> str:
    """The informative line of a DALI error (it comes after 'encountered:')."""
    text = str(e)
    text = text.split("encountered:", 1)[1] if "encountered:" in text else text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "Critical error" not in ln]
    return (lines[0] if lines else "unknown error")[:200]


def _fit(images, res: int, crop_ratio: float):
    """Shorter side resized to res / crop_ratio (antialiased), centre crop res x res (torchvision.fit's twin)."""
    images = fn.resize(images, resize_shorter=round(res / crop_ratio), interp_type=types.INTERP_LINEAR, antialias=True)
    return fn.crop(images, crop=(res, res), crop_pos_x=0.5, crop_pos_y=0.5, out_of_bounds_policy="pad")


def decode_eval(files: list[str], *, resolution: int, device: torch.device, threads: int,
                crop_ratio: float = EVAL_CROP_RATIO["random_resized_crop"], batch_size: int = 64) -> torch.Tensor:
    """Decode `files` once with the validation transform (`_fit`): uint8 (N, res, res, 3) on `device`."""
    if not AVAILABLE:
        raise DataError("data.backend=dali but nvidia-dali is not installed (use data.backend=torchvision)")
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    res = resolution
    batch_size = max(1, min(batch_size, len(files)))

    @pipeline_def(batch_size=batch_size, num_threads=max(1, threads), device_id=_dali_device_id(device), seed=0)
    def eval_pipe():
        jpegs, _ = fn.readers.file(files=files, labels=list(range(len(files))), random_shuffle=False,
                                   pad_last_batch=True, name="reader")
        images = fn.decoders.image(jpegs, device="mixed" if on_gpu else "cpu", output_type=types.RGB,
                                   adjust_orientation=False)
        return _fit(images, res, crop_ratio)

    pipe = eval_pipe()
    pipe.build()
    out = torch.empty((len(files), res, res, 3), dtype=torch.uint8, device=device)
    done = 0
    while done < len(files):
        try:
            (batch,) = pipe.run()
        except RuntimeError as e:
            raise DataError(f"DALI could not decode an evaluation image ({_reason(e)})") from None
        take = min(batch_size, len(files) - done)
        if on_gpu:
            chunk = torch.empty((batch_size, res, res, 3), dtype=torch.uint8, device=device)
            feed_ndarray(batch.as_tensor(), chunk, cuda_stream=torch.cuda.current_stream(device))
            out[done:done + take] = chunk[:take]
        else:
            out[done:done + take] = torch.from_numpy(np.asarray(batch.as_tensor()))[:take]
        done += take
    del pipe
    return out
