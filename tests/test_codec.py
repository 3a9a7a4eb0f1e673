"""Result bytes -> IMAGE/MASK the way ComfyUI's LoadImage reads them, and IMAGE -> PNG for uploads."""
import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from conftest import core, said
from fake_gpugeek import gif_bomb, photo_png, webp_bomb

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


def decoding_calls(monkeypatch) -> list:
    """Every pixel decoded from here on, counted: the codec's decoders and Pillow's loading of pixels."""
    calls = []
    for name in ("decode_frames", "decode_array"):
        real = getattr(codec, name)
        monkeypatch.setattr(codec, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append("Pillow") or load(self))
    return calls


@pytest.mark.parametrize("bomb", [lambda: webp_bomb(2048, 2048, 16), lambda: gif_bomb((2048, 2048), [(0, 0)] * 16)],
                         ids=["webp", "gif"])
def test_animated_results_are_refused_from_their_headers_before_any_frame_is_decoded(bomb, monkeypatch):
    """The review's bomb: 8 files of 16 frames at 2048x2048, under 7 KB in all, would need 8 GB as IMAGE and
    MASK; each file alone (1 GB) passes. Before: every frame of every file was decoded and held (1.5 GB) before
    the batch's total was compared with the limit."""
    files = [bomb() for _ in range(8)]
    assert sum(map(len, files)) < 7000
    calls = decoding_calls(monkeypatch)
    with pytest.raises(E.ResultError) as ei:
        batch.decode_batch(files, threads=2)
    assert calls == []
    assert (codec.header(files[0]).pixels, codec.header(files[0]).frames) == (2048 * 2048, 16)
    for lang in ("en", "zh"):   # one sentence, the class's general hint left out
        sentence = said("err_results_too_big", lang, frames=128, mb=8192, limit=codec.MAX_BATCH_BYTES >> 20)
        assert ei.value.text(lang) == sentence + ("。" if lang == "zh" else ".") + " (call: decode)"


def test_files_that_come_one_by_one_are_refused_as_soon_as_their_headers_pass_the_limit(monkeypatch):
    """A gateway's decoder reads each file's header as it arrives: the running total (every file in the batch's
    size, the first file's, or its own where larger; files still to come one image each) is refused at the
    file that passes the limit, before that file is decoded, and so is every file after it. Before: each file
    was decoded and the batch compared with the limit only when its first file was."""
    small, big = photo_png(16, 16, seed=1), photo_png(64, 64, seed=2)
    monkeypatch.setattr(codec, "MAX_BATCH_BYTES", codec.batch_bytes(1, 80, 100))   # 8000 pixels
    calls = decoding_calls(monkeypatch)
    dec = batch.BatchDecoder(4)
    dec.add(0, small)   # 16x16 and three to come: 4 x 256 pixels
    dec.add(1, big)     # 256 + 4096 + 2 x 256 = 4864
    decoded = len(calls)
    assert decoded > 0
    for i in (2, 3):    # 256 + 2 x 4096 + 256 = 8704: past the limit
        with pytest.raises(E.ResultError) as ei:
            dec.add(i, big)
        assert said("err_results_too_big", "en", frames=4) in str(ei.value)
    assert len(calls) == decoded


@pytest.mark.parametrize("data", [webp_bomb(64, 48, 3), gif_bomb((64, 48), [(0, 0)] * 3)], ids=["webp", "gif"])
def test_a_file_of_several_frames_is_refused_undecoded_where_one_image_a_file_is_expected(data, monkeypatch):
    """A gateway's savers (SaveImage; compact's RebatchImages + SaveAnimatedWEBP) write one image a file: a file
    of several frames is not what the cloud part made."""
    calls = decoding_calls(monkeypatch)
    dec = batch.BatchDecoder(2)
    with pytest.raises(E.ResultError) as ei:
        dec.add(0, data)
    assert calls == []
    assert ei.value.text("zh").startswith(said("err_result_frames", "zh", frames=3))
    img, _ = batch.decode_batch([data])   # Load Result reads every frame, as LoadImage does
    assert img.shape == (3, 48, 64, 3)


def test_a_gif_whose_frames_pass_its_screen_is_counted_at_the_size_it_decodes_to(monkeypatch):
    """Pillow grows a GIF to a frame that lies past its logical screen: a 1x1 screen can hide frames of any
    size. The header is the screen grown to every frame; before, the screen (1x1) was checked and every frame
    decoded at full size."""
    data = gif_bomb((1, 1), [(0, 0), (255, 127)])
    monkeypatch.setattr(codec, "MAX_BATCH_BYTES", codec.batch_bytes(2, 128, 256) - 1)
    calls = decoding_calls(monkeypatch)
    with pytest.raises(E.ResultError, match="would need"):
        batch.decode_batch([data])
    assert calls == []
    assert codec.header(data) == codec.Header("gif", 256, 128, 2)
    with Image.open(io.BytesIO(data)) as im:
        im.seek(1)
        assert im.size == (256, 128)


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


def test_a_batch_being_made_ahead_in_another_shape_is_not_waited_for():
    """Issue 39 (the fan-out after a long clip): a part of the same shape as a clip reserves the clip's batch; when
    the files come in another shape, the decoder does not wait for that reserve to be made (up to 1 GB faulted in)
    before making its own: it drops it at once."""
    import threading
    from concurrent.futures import Future
    files = [photo_png(48, 32, seed=s) for s in (1, 2)]
    plain, _ = batch.decode_batch(files)
    never = Future()   # a reserve still being made, of the clip's shape
    never.shape = (81, 480, 832, 3)
    dec = batch.BatchDecoder(2, reserve=never)
    t = threading.Thread(target=lambda: [dec.add(i, d) for i, d in enumerate(files)], daemon=True)
    t.start()
    t.join(30)   # not a time bar: without the fix this thread waits for ever
    assert not t.is_alive()
    assert never.cancelled()
    img, _ = dec.result()
    assert torch.equal(img, plain)
