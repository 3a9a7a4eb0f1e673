"""How a cloud part's images come back (issue 26): lossless PNG by default, or *compact* (lossy WebP through
ComfyUI's own SaveAnimatedWEBP, one file per batch) per gateway, in the settings or with GPUGEEK_TRANSFER.
Masks stay exact either way; the decoded frames are what ComfyUI's LoadImage reads from the same file."""
import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

import mini_comfy
from conftest import JsonRequest, core, load_pack
from fake_gpugeek import animated_webp, photo_png

pack = load_pack()
import folder_paths  # noqa: E402  (the stub installed by load_pack)
from server import PromptServer  # noqa: E402

codec = core("codec")
batch = core("batch")
config = core("config")
E = core("errors")
WF = "123456789012345"
SIZE = 256


def execute(prompt, classes):
    return asyncio.run(mini_comfy.execute(json.loads(json.dumps(prompt)), classes, PromptServer.instance))


def photo_in(name="photo.png", seed=3):
    """A photo-like local image the cloud part reads (uploaded; the fake's saver returns its pixels)."""
    Image.open(io.BytesIO(photo_png(SIZE, SIZE, seed=seed))).save(Path(folder_paths.get_input_directory(), name))
    return np.asarray(Image.open(Path(folder_paths.get_input_directory(), name)).convert("RGB"))


def image_and_mask(**gw):
    return {"1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
            "10": {"class_type": "GPUGeekCloudExecute",
                   "inputs": {"workflow_id": WF, "run_on": "cloud", "timeout_s": 60, "image_1": ["1", 0],
                              "mask_1": ["1", 1], **gw}}}


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def savers(fake) -> dict:
    task = list(fake.tasks.values())[-1]
    return {n: v["class_type"] for n, v in task.prompt.items() if n.startswith("gpugeek_out_")}


def image_file(fake) -> bytes:
    """The last task's file of the gateway's image (its saver reads node 1's image, output 0)."""
    task = list(fake.tasks.values())[-1]
    save = next(n for n, v in task.prompt.items() if n.startswith("gpugeek_out_") and v["inputs"]["images"][1] == 0
                and task.prompt[v["inputs"]["images"][0]]["class_type"] != "MaskToImage")
    return task.files[save][0][1]


def bytes_down(fake) -> int:
    task = list(fake.tasks.values())[-1]
    return pack.nodes.cloud.journal().by_prompt_id(task.prompt_id)["bytes_down"]


def test_compact_moves_several_times_fewer_bytes_close_to_the_pixels_and_masks_exact(env, fake):
    src = photo_in()
    lossless, _, _ = execute(image_and_mask(), env)
    assert sorted(savers(fake).values()) == ["SaveImage", "SaveImage"]
    lossless_bytes = bytes_down(fake)
    png = len(image_file(fake))
    compact, ui, _ = execute(image_and_mask(transfer="compact"), env)
    assert sorted(savers(fake).values()) == ["SaveAnimatedWEBP", "SaveImage"]   # the mask stays PNG
    compact_bytes = bytes_down(fake)
    image, mask = compact["10"][0], compact["10"][4]
    assert image.shape == lossless["10"][0].shape == (1, SIZE, SIZE, 3)
    assert torch.equal(lossless["10"][0][0], torch.from_numpy(src.astype(np.float32) / 255))
    quality = psnr(image[0].numpy(), src / 255.0)
    assert 30 < quality < float("inf"), quality          # lossy, and close
    assert torch.equal(mask, lossless["10"][4])           # the mask is exact in both
    assert torch.equal(mask[0], torch.from_numpy(src[..., 0].astype(np.float32) / 255))
    webp = image_file(fake)
    assert webp[:4] == b"RIFF" and len(webp) * 5 < png, (len(webp), png)   # the image: 5x fewer bytes at least
    assert compact_bytes == lossless_bytes - png + len(webp)               # the tasks tab counts what moved
    loaded = [np.asarray(f.convert("RGB"), np.float32) / 255 for f in ImageSequence.Iterator(Image.open(io.BytesIO(webp)))]
    assert np.array_equal(image[0].numpy(), loaded[0])   # what ComfyUI's LoadImage reads from that file
    assert [p["filename"].endswith(".webp") for p in ui["10"]["images"]] == [True, False]   # previews kept
    # the gateway's closing line says how the images came back and what moved
    done = ui["10"]["gpugeek"][0]
    assert (done["transfer"], done["bytes_down"], done["uploaded_bytes"]) == ("compact", compact_bytes, 0)
    last = [t for t, n in PromptServer.instance.progress_texts if n == "10"][-1]
    assert last.startswith("Done: ran") and last.endswith(f" · {round(compact_bytes / 1e3)} KB back (compact)"), last
    _, ui, _ = execute(image_and_mask(), env)
    assert (ui["10"]["gpugeek"][0]["transfer"], ui["10"]["gpugeek"][0]["bytes_down"]) == ("lossless", lossless_bytes)


def test_a_batch_of_identical_images_from_several_runs_keeps_every_image(env, fake):
    """libwebp's animation encoder merges a frame equal to the one before: a batch saved as one animated WebP
    would come back short. Each image is its own file, so none is lost."""
    photo_in()
    fake.task_opts.update(batch=3)                        # three identical images a run
    lossless, _, _ = execute(image_and_mask(runs=2), env)
    compact, _, _ = execute(image_and_mask(runs=2, transfer="compact"), env)
    assert lossless["10"][0].shape == compact["10"][0].shape == (6, SIZE, SIZE, 3)
    for task in list(fake.tasks.values())[-2:]:
        webps = [n for files in task.files.values() for n, _ in files if n.endswith(".webp")]
        assert len(webps) == 3                            # one file per image
    assert animated_webp([photo_png(8, 8)] * 3, {"lossless": False})[12:16] == b"VP8 "   # merged into a still
    assert psnr(compact["10"][0].numpy(), lossless["10"][0].numpy()) > 30
    assert torch.equal(compact["10"][4], lossless["10"][4])


@pytest.mark.parametrize("where", ["environment", "settings"])
def test_the_default_comes_from_the_environment_or_the_settings_and_a_gateway_overrides_it(env, fake, monkeypatch, where):
    photo_in()
    if where == "environment":
        monkeypatch.setenv("GPUGEEK_TRANSFER", "compact")
    else:
        config.save_settings(transfer="compact")
    assert config.load_config().public()["transfer"] == "compact"
    execute(image_and_mask(), env)
    assert "SaveAnimatedWEBP" in savers(fake).values()
    execute(image_and_mask(transfer="settings"), env)
    assert "SaveAnimatedWEBP" in savers(fake).values()
    execute(image_and_mask(transfer="lossless"), env)
    assert "SaveAnimatedWEBP" not in savers(fake).values()


def test_an_unknown_transfer_in_the_environment_is_lossless_and_said(monkeypatch):
    monkeypatch.setenv("GPUGEEK_TRANSFER", "tiny")
    cfg = config.load_config()
    assert config.transfer_default() == "lossless" and config.transfer_of("") == "lossless"
    assert any("GPUGEEK_TRANSFER" in p for p in cfg.problems)


def test_the_settings_route_keeps_the_choice_and_refuses_other_words(env):
    routes = pack.nodes.routes

    out = asyncio.run(routes.post_config(JsonRequest({"transfer": "compact"})))
    assert json.loads(out.text)["transfer"] == "compact" and config.load_settings()["transfer"] == "compact"
    bad = asyncio.run(routes.post_config(JsonRequest({"transfer": "tiny"})))
    assert bad.status == 400 and "lossless" in json.loads(bad.text)["error"]
    asyncio.run(routes.post_config(JsonRequest({"transfer": "lossless"})))
    assert "transfer" not in config.load_settings() and config.transfer_default() == "lossless"


def test_frames_of_one_file_decode_as_loadimage_reads_them_and_a_bomb_is_refused_first(monkeypatch):
    frames = [photo_png(40, 32, seed=s) for s in range(4)]
    data = animated_webp(frames, {"lossless": False, "quality": 90})
    heads = [codec.header(data), codec.header(frames[0])]
    assert [h.frames for h in heads] == [4, 1] and heads[0].pixels == 40 * 32
    dec = batch.BatchDecoder(2, heads=heads)
    dec.add(1, frames[0])       # a still after a file of frames, decoded first: the still comes last
    dec.add(0, data)
    image, mask = dec.result()
    ref = [np.asarray(f.convert("RGB"), np.float32) / 255 for f in ImageSequence.Iterator(Image.open(io.BytesIO(data)))]
    assert image.shape == (5, 32, 40, 3) and mask.shape == (5, 64, 64)
    for k in range(4):
        assert np.array_equal(image[k].numpy(), ref[k])
    assert np.array_equal(image[4].numpy(), np.asarray(Image.open(io.BytesIO(frames[0])), np.float32) / 255)
    assert torch.equal(batch.decode_batch([data, frames[0]], threads=2)[0], image)
    monkeypatch.setattr(codec, "MAX_BATCH_BYTES", 40 * 32 * 16 * 3)
    with pytest.raises(E.ResultError, match="4 images"):
        batch.decode_batch([data])


@pytest.mark.parametrize("orientation", [None, 1, 6])
def test_a_still_webp_decodes_as_loadimage_reads_it_turned_by_its_exif(orientation, monkeypatch):
    """libwebp off the GIL decodes it (same pixels as Pillow); Pillow only where the EXIF turns the image."""
    im = Image.open(io.BytesIO(photo_png(40, 24, seed=2)))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    exif[0x0110] = "prompt:{}"              # what SaveAnimatedWEBP writes into every file
    buf = io.BytesIO()
    im.save(buf, "WEBP", quality=90, exif=exif.tobytes())
    from PIL import ImageOps
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))).convert("RGB"))
    pil = codec._pil_array
    used = []
    monkeypatch.setattr(codec, "_pil_array", lambda data: used.append(1) or pil(data))
    rgb, alpha = codec.decode_array(buf.getvalue())
    assert alpha is None and np.array_equal(rgb, want)
    assert used == ([1] if orientation == 6 or codec._webp_nogil is None else [])
    assert rgb.shape == ((40, 24, 3) if orientation == 6 else (24, 40, 3))
