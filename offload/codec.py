"""Image bytes <-> pixels: one result file decoded (its frames, RGB and alpha), ComfyUI's tensors encoded for
upload, PNG text chunks. A batch of files into one IMAGE/MASK tensor is ``batch``.

Decoding follows ComfyUI's own LoadImage: EXIF orientation applied, alpha kept for the mask (mask = 1 - alpha),
every frame of a file of several. Where ComfyUI mangles 16-bit files, this scales them to 0..1 properly.

PNG decoding uses libspng (imagecodecs, which lets go of the GIL; else pyspng) when installed and the file has no
EXIF chunk, Pillow otherwise;
encoding uses Pillow at compress level 1 (Pillow's default level 6 is ~8x slower for ~the same size).
"""
from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from .errors import ResultError

try:  # optional, measured faster (bench/codec.py); Pillow is the fallback everywhere
    import pyspng  # type: ignore
except Exception:  # pragma: no cover - depends on the environment
    pyspng = None
try:  # optional: libspng that lets go of the GIL while it decodes, so files decode on every core at once
    from imagecodecs import spng_decode as _spng_nogil  # type: ignore
except Exception:  # pragma: no cover - depends on the environment
    _spng_nogil = None
try:  # optional: libwebp that lets go of the GIL (Pillow's WebP decoding holds it: 1.4x on two threads, this 2x)
    from imagecodecs import webp_decode as _webp_nogil  # type: ignore
except Exception:  # pragma: no cover - depends on the environment
    _webp_nogil = None

# Largest image accepted: 64 megapixels (8192x8192). A float32 RGB tensor of it is 768 MB. Read from the file's
# header before any pixel is decoded, wherever a result still is opened (the gateway's tensors, the output nodes'
# PNGs: nodes/output.py).
MAX_PIXELS = 8192 * 8192
# The formats Pillow may open here, by what a file's first bytes say it is (``sniff``): what the cloud's savers make
# (PNG, JPEG, WebP) and GIF, which ComfyUI's LoadImage reads too. Pillow is never left to guess among its other
# formats (TIFF, BMP, ICO, PPM, PCX, TGA, SGI, DDS: parsers a hostile file need not reach; EPS runs Ghostscript).
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF"}
# Largest decoded batch (float32 IMAGE + MASK) accepted in one go.
MAX_BATCH_BYTES = 4 * 1024**3
# PNG compression for uploads: level 1 is several times faster than 6 at nearly the same size.
PNG_LEVEL = 1


def batch_bytes(count: int, h: int, w: int) -> int:
    """The memory of a decoded batch: float32 IMAGE [count,h,w,3] and its MASK [count,h,w]."""
    return count * h * w * 4 * 4


@dataclass(frozen=True)
class Header:
    """What a result file says of itself before any pixel is decoded: its kind, its size (an animation's
    canvas) and how many frames LoadImage would read from it."""
    kind: str
    width: int
    height: int
    frames: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def sniff(data: bytes) -> str:
    if data[:8] == _PNG_SIG:
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return "unknown"


def open_image(data: bytes):
    """A result file opened by Pillow, lazily (no pixel decoded yet), as the format its first bytes say and only
    one of ``PILLOW_FORMATS``; refused otherwise."""
    fmt = PILLOW_FORMATS.get(sniff(data))
    if fmt is None:
        raise ResultError("A result file is not an image (PNG, JPEG, WebP or GIF)", call="decode")
    return Image.open(io.BytesIO(data), formats=[fmt])


def _open_checked(data: bytes):
    """``open_image``, its size checked against MAX_PIXELS from the header (Pillow's own decompression-bomb
    warning is this check's to judge; its error, far past the limit, says the same)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = open_image(data)
    except ResultError:
        raise
    except Image.DecompressionBombError:
        raise ResultError(f"A result image is beyond the {MAX_PIXELS // 1_000_000} megapixel limit",
                          call="decode") from None
    except Exception as e:
        raise ResultError(f"A result file could not be read as an image ({type(e).__name__})", call="decode") from None
    try:
        check_size(*im.size)
    except ResultError:
        im.close()
        raise
    return im


def _png_header(data: bytes):
    """(width, height, bit depth, colour type, has_exif) from the chunks before the first IDAT."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ResultError("A result file is not a valid PNG", call="decode")
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    pos, exif = 8, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            break
        if kind == b"eXIf":
            exif = True
        pos += 12 + length
    return w, h, depth, ctype, exif


def header(data: bytes) -> Header:
    """A result file's kind, size and frames, read from its header and chunks without decoding a pixel (a PNG's
    IHDR, a WebP's chunks, a GIF's blocks, a JPEG's markers); refused when it is not an image or one of its
    frames passes ``MAX_PIXELS``."""
    if not data:
        raise ResultError("A result file is empty", call="decode")
    kind = sniff(data)
    if kind == "unknown":
        raise ResultError("A result file is not an image (PNG, JPEG, WebP or GIF)", call="decode")
    frames = 1
    if kind == "png":
        w, h, *_ = _png_header(data)
    elif kind == "webp":
        (w, h), frames = _webp_size(data), max(1, _webp_frames(data))
    elif kind == "gif":
        w, h, frames = _gif_header(data)
    else:
        with _open_checked(data) as im:   # lazy: the markers up to the first scan
            w, h = im.size
    check_size(w, h)
    return Header(kind, w, h, frames)


def check_size(w: int, h: int) -> None:
    if w <= 0 or h <= 0 or w * h > MAX_PIXELS:
        raise ResultError(f"A result image of {w}x{h} pixels is beyond the {MAX_PIXELS // 1_000_000} megapixel "
                          "limit", call="decode")


def _pil_array(data: bytes):
    """Decode with Pillow the way LoadImage does; returns (HxWxC uint8 or float32 array, has_alpha)."""
    im = _open_checked(data)   # its size from the header, before a pixel is decoded
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as e:
            raise ResultError(f"A result file could not be decoded ({type(e).__name__})", call="decode") from None
    try:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im).astype(np.float32)
            scale = 65535.0 if im.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
            g = np.clip(arr / scale, 0, 1)
            return np.repeat(g[..., None], 3, axis=2), None
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            im = im.convert("RGBA")
            arr = np.asarray(im)
            return arr[..., :3], arr[..., 3]
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im), None
    except ResultError:
        raise
    except Exception as e:
        raise ResultError(f"A result file could not be decoded ({type(e).__name__})", call="decode") from None


def parallel_decoding() -> bool:
    """Whether result files should decode in several threads at once: yes with imagecodecs' libspng (it lets go
    of the GIL), and with Pillow alone (so does Pillow); not with pyspng alone, which holds the GIL and on one
    thread is as fast as Pillow on two (bench/codec.py), while it leaves a loaded machine's cores to others."""
    return _spng_nogil is not None or pyspng is None


def decode_array(data: bytes, use_spng: bool = True):
    """Bytes -> (rgb, alpha): rgb HxWx3 uint8/uint16/float32, alpha HxW or None (same integer depth).

    ``use_spng=False`` keeps pyspng out (its binding holds the GIL while it decodes): imagecodecs' libspng
    where installed, else Pillow, both of which let go of it, so other threads decode at the same time; all
    give identical pixels for PNG."""
    if not data:
        raise ResultError("A result file is empty", call="decode")
    kind = sniff(data)
    if kind == "unknown":
        raise ResultError("A result file is not an image (PNG, JPEG, WebP or GIF)", call="decode")
    if kind == "png":
        w, h, depth, ctype, exif = _png_header(data)
        check_size(w, h)
        load = _spng_nogil or (pyspng.load if use_spng and pyspng is not None else None)
        if load is not None and not exif and ctype != 3:
            try:
                arr = load(data)
            except Exception:  # a layout libspng does not take (or a broken file): Pillow decides
                return _pil_array(data)
            if arr.ndim == 2:
                arr = arr[..., None]
            c = arr.shape[2]
            if c == 1:
                return np.repeat(arr, 3, axis=2), None
            if c == 2:
                return np.repeat(arr[..., :1], 3, axis=2), arr[..., 1]
            if c == 4:
                return arr[..., :3], arr[..., 3]
            return arr, None
    if kind == "webp" and _webp_nogil is not None and not _webp_frames(data):
        arr = _webp_still(data)
        if arr is not None:
            return (arr[..., :3], arr[..., 3]) if arr.shape[2] == 4 else (arr, None)
    return _pil_array(data)


def _webp_still(data: bytes):
    """A still WebP decoded by libwebp off the GIL (the same pixels as Pillow's), unless its EXIF turns it
    (LoadImage applies the turn: Pillow decides); None when libwebp cannot read it (Pillow says why)."""
    try:
        with open_image(data) as im:
            if im.getexif().get(0x0112, 1) != 1:
                return None
        arr = _webp_nogil(data)
    except Exception:
        return None
    return arr if arr.ndim == 3 and arr.shape[2] in (3, 4) else None


def _webp_frames(data: bytes) -> int:
    """The frames (ANMF chunks) of an animated WebP, counted from its chunks without decoding; 0 for a still."""
    count, pos = 0, 12
    while pos + 8 <= len(data):
        size = struct.unpack("<I", data[pos + 4:pos + 8])[0]
        count += data[pos:pos + 4] == b"ANMF"
        pos += 8 + size + (size & 1)
    return count


def _webp_size(data: bytes) -> tuple[int, int]:
    """A WebP's canvas from its first chunk (VP8X: the canvas of every frame; VP8: a lossy still's key frame
    header; VP8L: a lossless still's), as the WebP container spec lays them out."""
    first = data[12:16]
    if first == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if first == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if first == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise ResultError("A result file is not a valid WebP", call="decode")


def _gif_blocks_end(data: bytes, pos: int) -> int:
    """Where a GIF's run of data sub-blocks starting at ``pos`` ends (after its empty block)."""
    while pos < len(data) and data[pos]:
        pos += data[pos] + 1
    return pos + 1


def _gif_header(data: bytes) -> tuple[int, int, int]:
    """(width, height, frames) of a GIF from its blocks, without decoding: the logical screen grown to every
    frame's extent (Pillow grows the image to a frame that passes the screen), and its image descriptors."""
    if len(data) < 13:
        raise ResultError("A result file is not a valid GIF", call="decode")
    w, h = struct.unpack("<HH", data[6:10])
    pos = 13 + ((3 << ((data[10] & 7) + 1)) if data[10] & 0x80 else 0)   # the global colour table
    frames = 0
    while pos < len(data) and data[pos] != 0x3B:   # the trailer
        if data[pos] == 0x21:                      # an extension: its label, then sub-blocks
            pos = _gif_blocks_end(data, pos + 2)
        elif data[pos] == 0x2C and pos + 10 <= len(data):   # an image: its extent, colour table, LZW data
            x, y, fw, fh, flags = struct.unpack("<HHHHB", data[pos + 1:pos + 10])
            w, h, frames = max(w, x + fw), max(h, y + fh), frames + 1
            pos = _gif_blocks_end(data, pos + 11 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0))
        else:                                      # a stray byte, skipped as Pillow skips it
            pos += 1
    return w, h, max(1, frames)


def decode_frames(data: bytes, head: Header, use_spng: bool = True) -> list:
    """Bytes -> [(rgb, alpha)], the ``head.frames`` frames its header counted (``header``), as ComfyUI's
    LoadImage reads a file of several frames (each frame EXIF-rotated; alpha where a frame has it). The memory
    they need is the caller's to check, from the header, before this is called (batch.BatchDecoder)."""
    if head.frames == 1:
        return [decode_array(data, use_spng)]
    frames = []
    try:
        with open_image(data) as im:
            for k in range(head.frames):
                im.seek(k)
                frame = ImageOps.exif_transpose(im)
                if frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info):
                    arr = np.asarray(frame.convert("RGBA"))
                    frames.append((arr[..., :3], arr[..., 3]))
                else:
                    frames.append((np.asarray(frame.convert("RGB")), None))
    except ResultError:
        raise
    except Exception as e:
        raise ResultError(f"A result file could not be decoded ({type(e).__name__})", call="decode") from None
    return frames


# ---- encoding ---------------------------------------------------------------------------------------
def _to_uint8(t) -> np.ndarray:
    import torch
    if isinstance(t, torch.Tensor):
        t = t.detach()
        if t.dtype != torch.uint8:
            t = (t.float().clamp(0, 1) * 255).round_().to(torch.uint8)
        return t.cpu().numpy()
    arr = np.asarray(t)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return arr


def encode_png(image, mask=None, *, level: int = PNG_LEVEL) -> bytes:
    """One IMAGE frame [H,W,3] (and optional MASK [H,W], stored as alpha = 1 - mask) -> PNG bytes."""
    rgb = _to_uint8(image)
    if rgb.ndim == 4:
        if rgb.shape[0] != 1:
            raise ValueError("encode_png takes one frame; split the batch first")
        rgb = rgb[0]
    if rgb.ndim == 2:
        im = Image.fromarray(rgb, "L")
    else:
        im = Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB")
    if mask is not None:
        import torch
        m = mask[0] if getattr(mask, "ndim", 0) == 3 else mask
        m = 1.0 - (m.float() if isinstance(m, torch.Tensor) else torch.as_tensor(np.asarray(m), dtype=torch.float32))
        a = _to_uint8(m)
        if a.shape != (im.height, im.width):
            a = np.asarray(Image.fromarray(a, "L").resize((im.width, im.height), Image.BILINEAR))
        im = im.convert("RGB")
        im.putalpha(Image.fromarray(a, "L"))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=level)
    return buf.getvalue()


def encode_mask_png(mask, *, level: int = PNG_LEVEL) -> bytes:
    """A MASK frame [H,W] as an 8-bit grayscale PNG (read back in the cloud by LoadImageMask, channel red)."""
    m = mask[0] if getattr(mask, "ndim", 0) == 3 else mask
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(m), "L").save(buf, "PNG", compress_level=level)
    return buf.getvalue()


def tensor_digest(*tensors) -> str:
    """A content hash of pixels (used for upload dedup): shape, dtype and bytes of each tensor."""
    import hashlib

    import torch
    h = hashlib.blake2b(digest_size=20)
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
        else:
            a = np.ascontiguousarray(t)
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


_TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt")


def png_with_text(data: bytes, text: dict) -> bytes:
    """The same PNG (pixels untouched, no re-encoding) with its text chunks replaced by ``text`` (keyword ->
    string; tEXt where Latin-1 holds it, else iTXt in UTF-8, as Pillow writes them), right after IHDR: a cloud
    result saved here with this machine's workflow in it, as ComfyUI's Save Image writes it."""
    if sniff(data) != "png" or data[12:16] != b"IHDR":
        raise ResultError("A result file is not a valid PNG", call="save")
    out, pos = [data[:8]], 8
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise ResultError("A result file is a truncated PNG", call="save")
        if kind not in _TEXT_CHUNKS:
            out.append(data[pos:end])
        if kind == b"IHDR":
            out.extend(_text_chunk(k, v) for k, v in text.items())
        pos = end
        if kind == b"IEND":
            return b"".join(out)
    raise ResultError("A result file is a truncated PNG", call="save")


def _text_chunk(keyword: str, value: str) -> bytes:
    key = keyword.encode("latin-1")[:79]
    try:
        kind, body = b"tEXt", key + b"\0" + value.encode("latin-1")
    except UnicodeEncodeError:
        kind, body = b"iTXt", key + b"\0\0\0\0\0" + value.encode("utf-8")
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
