"""Result bytes -> IMAGE/MASK the way ComfyUI's LoadImage reads them, and IMAGE -> PNG for uploads."""
import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import core
from fake_gpugeek import photo_png

codec = core("codec")
batch = core("batch")
E = core("errors")


def comfy_load(data):
    """ComfyUI's LoadImage algorithm (nodes.py), for one frame, as the reference."""
    from PIL import ImageOps
    i = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if i.mode == "I":
        i = i.point(lambda v: v * (1 / 255))
    image = torch.from_numpy(np.array(i.convert("RGB")).astype(np.float32) / 255.0)[None]
    if "A" in i.getbands():
        mask = 1.0 - torch.from_numpy(np.array(i.getchannel("A")).astype(np.float32) / 255.0)
    elif i.mode == "P" and "transparency" in i.info:
        mask = 1.0 - torch.from_numpy(np.array(i.convert("RGBA").getchannel("A")).astype(np.float32) / 255.0)
    else:
        mask = torch.zeros((64, 64), dtype=torch.float32)
    return image, mask[None]


def encode(im, fmt="PNG", **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


RGB = Image.open(io.BytesIO(photo_png(40, 30, seed=1)))


@pytest.mark.parametrize("make", [
    lambda: encode(RGB),
    lambda: encode(Image.open(io.BytesIO(photo_png(40, 30, seed=2, mode="RGBA")))),
    lambda: encode(RGB.convert("L")),
    lambda: encode(RGB.convert("LA")),
    lambda: encode(RGB.convert("P")),
    lambda: encode(RGB.convert("P"), transparency=0),
    lambda: encode(RGB, "JPEG", quality=90),
    lambda: encode(RGB, "WEBP", quality=90),
    lambda: encode(Image.open(io.BytesIO(photo_png(40, 30, seed=2, mode="RGBA"))), "WEBP", lossless=True),
], ids=["rgb", "rgba", "gray", "gray-alpha", "palette", "palette-transparent", "jpeg", "webp", "webp-alpha"])
def test_decode_matches_comfy_loadimage(make):
    data = make()
    img, mask = batch.decode_image(data)
    ref_img, ref_mask = comfy_load(data)
    assert img.dtype == torch.float32 and img.shape == ref_img.shape
    assert torch.equal(img, ref_img)
    assert mask.shape == ref_mask.shape and torch.allclose(mask, ref_mask, atol=1e-6)


def test_pillow_fallback_is_identical(monkeypatch):
    data = photo_png(64, 48, seed=3, mode="RGBA")
    a = batch.decode_image(data)
    monkeypatch.setattr(codec, "pyspng", None)
    monkeypatch.setattr(codec, "_spng_nogil", None)
    b = batch.decode_image(data)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_16_bit_png_scaled_to_full_range():
    arr = (np.linspace(0, 65535, 32 * 8).reshape(8, 32)).astype(np.uint16)
    data = encode(Image.fromarray(arr))
    img, _ = batch.decode_image(data)
    assert img.shape == (1, 8, 32, 3)
    assert torch.allclose(img[0, ..., 0], torch.from_numpy(arr.astype(np.float32) / 65535.0), atol=1e-6)


def test_exif_orientation_applied():
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    data = encode(im, "JPEG", exif=exif.tobytes())
    img, _ = batch.decode_image(data)
    assert img.shape == (1, 40, 20, 3)
    png = encode(im, "PNG", exif=exif.tobytes())
    assert batch.decode_image(png)[0].shape == (1, 40, 20, 3)


def test_batch_into_one_tensor_and_mixed_sizes_fitted():
    a = photo_png(64, 64, seed=1)
    b = photo_png(32, 48, seed=2)
    img, mask = batch.decode_batch([a, a, b])
    assert img.shape == (3, 64, 64, 3) and mask.shape == (3, 64, 64)
    assert torch.equal(img[0], img[1])
    assert mask.abs().sum() == 0


def test_mixed_alpha_batch_gives_full_size_masks():
    a = photo_png(16, 16, seed=1)
    b = photo_png(16, 16, seed=1, mode="RGBA")
    img, mask = batch.decode_batch([a, b])
    assert mask.shape == (2, 16, 16) and mask[0].abs().sum() == 0 and mask[1].abs().sum() > 0


@pytest.mark.parametrize("data,words", [
    (b"", "empty"),
    (b"<html>not an image</html>", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "not a valid PNG"),
    (photo_png(8, 8)[:60], "could not be decoded"),
])
def test_bad_bytes_are_clear_errors(data, words):
    with pytest.raises(E.ResultError) as ei:
        batch.decode_batch([data])
    assert words in str(ei.value)


def _bomb_png(w, h):
    raw = zlib.compress(b"\x00" * 100)  # tiny, claims to be huge
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(E.ResultError) as ei:
        batch.decode_batch([_bomb_png(100000, 100000)])
    assert "megapixel" in str(ei.value)
    big = encode(Image.new("RGB", (9000, 9000)), "JPEG")
    with pytest.raises(E.ResultError):
        batch.decode_batch([big])


def test_encode_roundtrip_fast_level_and_mask_as_alpha():
    img, _ = batch.decode_image(photo_png(50, 40, seed=4))
    data = codec.encode_png(img[0])
    assert codec.PNG_LEVEL != 6
    back, _ = batch.decode_image(data)
    assert torch.equal(back, img)
    mask = torch.zeros((40, 50))
    mask[:, :25] = 1.0
    rgba = codec.encode_png(img[0], mask)
    back, m = batch.decode_image(rgba)
    assert torch.equal(back, img) and torch.equal(m[0], mask)
    mp = codec.encode_mask_png(mask)
    assert Image.open(io.BytesIO(mp)).mode == "L"


def test_tensor_digest_tracks_pixels():
    t = torch.rand((8, 8, 3))
    assert codec.tensor_digest(t) == codec.tensor_digest(t.clone())
    u = t.clone()
    u[0, 0, 0] += 0.5
    assert codec.tensor_digest(t) != codec.tensor_digest(u)


def test_results_decode_in_parallel_only_with_a_decoder_that_lets_go_of_the_gil(monkeypatch):
    """pyspng alone holds the GIL: one thread (as fast as Pillow on two); imagecodecs' libspng or Pillow alone:
    every core."""
    monkeypatch.setattr(codec, "_spng_nogil", None)
    monkeypatch.setattr(codec, "pyspng", object())
    assert not codec.parallel_decoding()
    monkeypatch.setattr(codec, "pyspng", None)
    assert codec.parallel_decoding()
    monkeypatch.setattr(codec, "_spng_nogil", lambda d: None)
    assert codec.parallel_decoding()


def test_a_batch_made_ahead_is_written_into_when_its_shape_matches_and_dropped_when_not():
    """batch.reserve: the tensor made while the cloud task ran is the batch when the files have its shape (count,
    height, width); otherwise the batch is made as without it. The pixels are the same either way."""
    files = [photo_png(48, 32, seed=s) for s in (1, 2, 3)]
    plain, _ = batch.decode_batch(files)
    for count, h, w, used in ((3, 32, 48, True), (3, 48, 32, False), (2, 32, 48, False), (4, 32, 48, False)):
        made = batch.reserve(count, h, w)
        assert made.shape == (count, h, w, 3) and made.dtype == torch.float32
        dec = batch.BatchDecoder(3, reserve=made)
        for i, d in enumerate(files):
            dec.add(i, d)
        img, _ = dec.result()
        assert (img.data_ptr() == made.data_ptr()) is used
        assert torch.equal(img, plain)


def test_a_batch_past_the_limit_is_not_made_ahead():
    side = int((codec.MAX_BATCH_BYTES // 16) ** 0.5) + 1
    assert batch.reserve(1, side, side) is None and batch.reserve(0, 8, 8) is None


def test_populating_a_tensor_keeps_what_is_written_in_it():
    """The kernel faults the memory in (Linux 5.14 and later) and leaves its content alone."""
    import platform
    import re
    import sys
    t = torch.empty((3, 64, 64, 3), dtype=torch.float32)
    t.copy_(torch.rand_like(t))
    before = t.clone()
    kernel = tuple(int(x) for x in re.findall(r"\d+", platform.release())[:2])
    assert batch.populate(t) is (sys.platform.startswith("linux") and kernel >= (5, 14))
    assert torch.equal(t, before)


def test_a_batch_still_being_made_is_waited_for_and_one_that_failed_is_made_here():
    """The gateway hands the decoder the future of a batch made ahead: the first decoded file waits for it;
    a future cancelled or failed leaves the batch to be made as without one."""
    from concurrent.futures import Future, ThreadPoolExecutor
    files = [photo_png(48, 32, seed=s) for s in (1, 2)]
    plain, _ = batch.decode_batch(files)
    with ThreadPoolExecutor(1) as ex:
        pending = ex.submit(lambda: (time.sleep(0.3), batch.reserve(2, 32, 48))[1])
        failed = Future()
        failed.set_exception(MemoryError())
        cancelled = Future()
        cancelled.cancel()
        for fut, used in ((pending, True), (failed, False), (cancelled, False)):
            dec = batch.BatchDecoder(2, reserve=fut)
            for i, d in enumerate(files):
                dec.add(i, d)
            img, _ = dec.result()
            assert (fut.done() and not fut.cancelled() and fut.exception() is None
                    and img.data_ptr() == fut.result().data_ptr()) is used
            assert torch.equal(img, plain)
