"""Result files -> one ComfyUI batch: IMAGE float32 [B,H,W,3] in 0..1 and its MASK [B,H,W] (a 64x64 zero mask
when no file has alpha), each file decoded (codec) and written straight into its slot of one preallocated tensor
as it arrives, on every core. Files of a different size than the first are fitted to it (scaled and
centre-cropped, as ComfyUI's ImageBatch does); files of several frames unfold in file order. The memory is
counted from the files' headers before any pixel is decoded and refused past ``MAX_BATCH_BYTES``. A cloud part
run again decodes into a batch made while its task ran (``reserve``).
"""
from __future__ import annotations

import itertools
import sys
import threading

import numpy as np
from PIL import Image, ImageOps

from . import codec
from .codec import batch_bytes
from .errors import ResultError


def _max_of(arr) -> float:
    """The divisor that maps an array's values to 0..1 (division, as ComfyUI's LoadImage: bit-exact)."""
    if arr.dtype == np.uint8:
        return 255.0
    if arr.dtype == np.uint16:
        return 65535.0
    return 1.0


def _fit(rgb, alpha, w: int, h: int):
    """Scale and centre-crop an array to w x h (ComfyUI's ImageBatch behaviour for mismatched sizes)."""
    def fit_one(a):
        if a.dtype != np.uint8:
            a = (np.clip(a / _max_of(a), 0, 1) * 255).astype(np.uint8)
        mode = "L" if a.ndim == 2 else "RGB"
        im = ImageOps.fit(Image.fromarray(a, mode), (w, h), Image.BILINEAR, centering=(0.5, 0.5))
        return np.asarray(im)
    return fit_one(rgb), (fit_one(alpha) if alpha is not None else None)


def _madvise():
    """libc's madvise where the kernel can fault a range in at once (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        fn = ctypes.CDLL(None, use_errno=True).madvise
        fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
        return fn
    except Exception:  # pragma: no cover - depends on the platform
        return None


_MADVISE = _madvise()
# madvise(MADV_POPULATE_WRITE), Linux 5.14+: every page of a range made present and writable in one call
MADV_POPULATE_WRITE = 23
PAGE = 4096


def populate(tensor) -> bool:
    """Fault in a fresh tensor's memory now, in one kernel call that lets go of the GIL and leaves its content
    alone; False where the kernel cannot (other systems, older kernels). 370 MB: 84 ms here, against 120 ms
    for a write a page."""
    if _MADVISE is None or tensor.numel() == 0:
        return False
    start, size = tensor.data_ptr(), tensor.numel() * tensor.element_size()
    begin = (start + PAGE - 1) // PAGE * PAGE
    return begin < start + size and _MADVISE(begin, start + size - begin, MADV_POPULATE_WRITE) == 0


# Largest batch made ahead of its files (``reserve``): held from shortly before the task's expected end.
MAX_RESERVE_BYTES = 1024**3


def reserve(count: int, h: int, w: int):
    """A batch tensor [count,h,w,3] made ahead of its files with its memory faulted in: made shortly before the
    cloud task is expected to end, from the shape the same cloud part gave last time (journal), so the decoders
    write into memory that is already there. None past ``MAX_RESERVE_BYTES`` or when it cannot be made."""
    try:
        import torch
        if count <= 0 or h <= 0 or w <= 0 or batch_bytes(count, h, w) > MAX_RESERVE_BYTES:
            return None
        t = torch.empty((count, h, w, 3), dtype=torch.float32)
        if not populate(t):
            t.view(-1)[::PAGE // 4].zero_()   # one write a page: nothing decodes into it yet
        return t
    except Exception:  # memory is short: the batch is made when its files come, as without a reserve
        return None


class BatchDecoder:
    """Files -> one IMAGE batch [B,H,W,3] and its MASK, each file decoded and written into its slots of one
    preallocated tensor as soon as it arrives (so decoding overlaps the downloads), then freed: the peak is
    the final tensor plus about one decoded file per thread. The first file's size (after EXIF rotation)
    is the batch's; files that arrive before it wait decoded; files of another size are fitted to it
    (scaled and centre-cropped, as ComfyUI's ImageBatch does). ``add`` may be called from several threads.

    The memory is bounded by what the files' headers say before any of their pixels is decoded: every frame
    in the batch's size (or its own where larger), summed over the files, refused past ``MAX_BATCH_BYTES``.
    ``heads``: every file's header, read before any file is decoded (``decode_batch``): the whole batch is
    checked at once and a file of several frames unfolds into consecutive slots. Without them (a gateway,
    whose savers write one image a file, in either transfer) each file's header is read as it arrives, a file
    of several frames is refused, and so is the running total as soon as it passes the limit."""

    def __init__(self, count: int, reserve=None, heads: list | None = None):
        if count <= 0:
            raise ResultError("No result files to decode", call="decode")
        self.count = count
        # a tensor made ahead (``reserve``), or a concurrent future of one: taken when the batch has its shape
        self._reserve = reserve
        self.image = None
        self.mask = None
        self._waiting: dict = {}
        self._lock = threading.Lock()
        self._done = 0
        self._one_frame = heads is None
        self._heads: dict = dict(enumerate(heads or []))   # file index -> codec.Header, read before decoding
        frames = [h.frames for h in heads] if heads is not None else [1] * count
        self._slots = list(itertools.accumulate(frames, initial=0))   # file i's frames: its slot onwards
        if heads is not None:
            self._check()

    def add(self, i: int, data: bytes, use_spng: bool = True) -> None:
        frames = codec.decode_frames(data, self._admit(i, data), use_spng)
        with self._lock:
            if self.image is None and i != 0:
                self._waiting[i] = frames
                return
            if self.image is None:
                self._allocate(frames[0][0].shape[:2])
            ready = [(i, frames)] + (sorted(self._waiting.items()) if i == 0 else [])
            self._waiting.clear() if i == 0 else None
        for j, got in ready:
            self._put(j, got)

    def _admit(self, i: int, data: bytes):
        """File i's header, read (unless given) and counted into the batch's memory before it is decoded."""
        if not self._one_frame:
            return self._heads[i]
        head = codec.header(data)
        if head.frames > 1:
            raise ResultError(key="err_result_frames", values={"frames": head.frames}, call="decode", hint="")
        with self._lock:
            self._heads[i] = head
            self._check()
        return head

    def _check(self) -> None:
        """Refuse the batch when the frames its headers count (files not here yet: one each) would pass
        ``MAX_BATCH_BYTES`` in the batch's size (the first file's), or in their own where larger."""
        p0 = self._heads[0].pixels if 0 in self._heads else 0
        unknown = self.count - len(self._heads)
        frames = unknown + sum(h.frames for h in self._heads.values())
        pixels = unknown * p0 + sum(h.frames * max(h.pixels, p0) for h in self._heads.values())
        need = batch_bytes(1, 1, pixels)   # IMAGE and MASK of every frame, as one row of all their pixels
        if need > codec.MAX_BATCH_BYTES:
            raise ResultError(key="err_results_too_big", call="decode", hint="",
                              values={"frames": frames, "mb": need >> 20, "limit": codec.MAX_BATCH_BYTES >> 20})

    def _allocate(self, hw) -> None:
        import torch
        shape = (self._slots[-1], *hw, 3)   # its memory was counted from the headers (``_check``)
        made, self._reserve = self._reserve, None
        if hasattr(made, "result") and getattr(made, "shape", shape) != shape:
            made.cancel()   # made for another shape (a clip's, before a small fan-out): not waited for
            made = None
        if hasattr(made, "result"):   # still being made: it is nearly done, and made faster than faulted in here
            try:
                made = made.result()
            except BaseException:  # noqa: BLE001 - cancelled or failed: the batch is made here
                made = None
        if made is not None and tuple(made.shape) == shape:
            self.image = made
            return
        # made here, its pages are faulted in as the decoders write (populating it beside them measured no
        # faster on two cores: bench/codec.py fresh_batch)
        self.image = torch.empty(shape, dtype=torch.float32)

    def _put(self, i: int, frames: list) -> None:
        for k, decoded in enumerate(frames):
            self._write(self._slots[i] + k, decoded)
        with self._lock:
            self._done += 1

    def _write(self, i: int, decoded) -> None:
        import torch
        rgb, alpha = decoded
        b, h0, w0 = self.image.shape[:3]
        if rgb.shape[:2] != (h0, w0):
            rgb, alpha = _fit(rgb, alpha, w0, h0)
        # numpy writes straight into the tensor, with the same float32 division as ComfyUI's LoadImage
        np.divide(rgb, np.float32(_max_of(rgb)), out=self.image.numpy()[i], dtype=np.float32, casting="unsafe")
        if alpha is not None:
            with self._lock:
                if self.mask is None:
                    self.mask = torch.zeros((b, h0, w0), dtype=torch.float32)
            m = self.mask[i].numpy()
            np.divide(alpha, np.float32(_max_of(alpha)), out=m, dtype=np.float32, casting="unsafe")
            np.subtract(np.float32(1.0), m, out=m)

    def result(self):
        import torch
        if self.image is None or self._done != self.count:
            raise ResultError(f"Only {self._done} of {self.count} result files could be decoded", call="decode")
        mask = self.mask if self.mask is not None else torch.zeros((self.image.shape[0], 64, 64), dtype=torch.float32)
        return self.image, mask


def decode_batch(files: list[bytes], threads: int = 1):
    """Several files -> (IMAGE [B,H,W,3], MASK [B,H,W] or [B,64,64] zeros when none has alpha).

    ``threads`` > 1 decodes in parallel threads with Pillow (which releases the GIL while it decodes;
    libspng's binding does not)."""
    if not files:
        raise ResultError("No result files to decode", call="decode")
    # every file's header first: the whole batch is refused before any of its pixels is decoded
    dec = BatchDecoder(len(files), heads=[codec.header(d) for d in files])
    if threads > 1 and len(files) > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=threads) as ex:
            list(ex.map(lambda i: dec.add(i, files[i], use_spng=False), range(len(files))))
    else:
        for i, d in enumerate(files):
            dec.add(i, d)
    return dec.result()


def decode_image(data: bytes):
    return decode_batch([data])
