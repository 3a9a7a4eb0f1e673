"""Every kind of local file a core loader reads goes up once, by content (video, audio, 3D as images do), in a
whole workflow and in a gateway's cloud part; every core output node shows what came back on itself, as it
would had it run here. One table (offload/plan/kinds.py) serves the plan, the run and the targets."""
import asyncio
import copy
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import core, load_pack, said
from test_plan import table
from test_whole_workflow import queue, runnable, wenv  # noqa: F401  (wenv: a fixture)

pack = load_pack()
import folder_paths  # noqa: E402  (the stub installed by load_pack)

plan = core("plan")
E = core("errors")
L = lambda n, s=0: [n, s]  # noqa: E731
MEDIA = {"LoadVideo": {"outputs": ["VIDEO"]}, "LoadAudio": {"outputs": ["AUDIO"]},
         "GetVideoComponents": {"outputs": ["IMAGE", "AUDIO", "FLOAT"]},
         "SaveVideo": {"outputs": ["VIDEO"], "output_node": True}, "SaveAudio": {"output_node": True},
         "Load3D": {"outputs": ["IMAGE", "MASK", "STRING"]}, "Preview3D": {"output_node": True},
         "PreviewAny": {"outputs": ["STRING"], "output_node": True}}
VIEWER = {"image": "threed/scene_1.png [temp]", "mask": "threed/scene_mask_1.png [temp]",
          "normal": "threed/scene_normal_1.png [temp]", "camera_info": {"position": [1, 2, 3]}, "recording": ""}


def media(video="clip.mp4", audio="tone.wav"):
    """A downloaded graph: a local video saved again, a local audio saved again, a 3D model previewed."""
    return {"1": {"class_type": "LoadVideo", "inputs": {"file": video}},
            "2": {"class_type": "SaveVideo", "inputs": {"video": L("1"), "filename_prefix": "video/clip",
                                                        "format": "auto", "codec": "auto"}},
            "3": {"class_type": "LoadAudio", "inputs": {"audio": audio}},
            "4": {"class_type": "SaveAudio", "inputs": {"audio": L("3"), "filename_prefix": "audio/tone"}},
            "5": {"class_type": "Load3D", "inputs": {"model_file": "3d/cube.glb", "image": dict(VIEWER),
                                                     "width": 64, "height": 64}},
            "6": {"class_type": "Preview3D", "inputs": {"model_file": L("5", 2)}}}


HERE = ("clip.mp4", "tone.wav", "3d/cube.glb", "threed/scene_1.png [temp]", "threed/scene_mask_1.png [temp]",
        "threed/scene_normal_1.png [temp]")


def test_a_whole_workflow_with_a_local_video_audio_and_3d_model_sends_them_all():
    p = media()
    res = plan.make_plan(copy.deepcopy(p), table(MEDIA), set(HERE).__contains__, whole=True, lang="en")
    gp = res.plans[plan.WHOLE]
    assert res.refusals == {} and gp.mode == "cloud"
    got = sorted((f.node, f.input, f.key, f.file) for f in gp.local_files)
    assert got == [("1", "file", "", "clip.mp4"), ("3", "audio", "", "tone.wav"),
                   ("5", "image", "image", "threed/scene_1.png [temp]"),
                   ("5", "image", "mask", "threed/scene_mask_1.png [temp]"),
                   ("5", "image", "normal", "threed/scene_normal_1.png [temp]"),
                   ("5", "model_file", "", "3d/cube.glb")]
    # the plan travels as JSON in the gateway's hidden input: what to point where survives it
    back = plan.GatewayPlan.from_json(res.local_prompt[plan.WHOLE]["inputs"][plan.PLAN_INPUT])
    assert sorted((f.node, f.input, f.key) for f in back.local_files) == [(n, i, k) for n, i, k, _ in got]
    assert sorted(res.local_prompt) == sorted([plan.WHOLE, "2", "4", "6"])


def test_a_file_that_is_not_here_passes_by_name_and_an_address_is_left_alone():
    p = media(video="https://example.com/clip.mp4", audio="cloud_only.wav")
    res = plan.make_plan(copy.deepcopy(p), table(MEDIA), {"3d/cube.glb"}.__contains__, whole=True)
    assert res.refusals == {} and [(f.node, f.input) for f in res.plans[plan.WHOLE].local_files] == [("5", "model_file")]


def test_a_gateways_cloud_part_uploads_its_local_video_and_audio():
    p = {"1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
         "2": {"class_type": "GetVideoComponents", "inputs": {"video": L("1")}},
         "3": {"class_type": "LoadAudio", "inputs": {"audio": "tone.wav"}},
         "4": {"class_type": "SaveAudio", "inputs": {"audio": L("3"), "filename_prefix": "a"}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 60,
                                                                "image_1": L("2")}},
         "11": {"class_type": "SaveImage", "inputs": {"images": L("10"), "filename_prefix": "x"}}}
    res = plan.make_plan(copy.deepcopy(p), table(MEDIA), {"clip.mp4"}.__contains__)
    gp = res.plans["10"]
    assert res.refusals == {} and sorted(gp.nodes) == ["1", "2"]
    assert [(f.node, f.input, f.file) for f in gp.local_files] == [("1", "file", "clip.mp4")]


# ---- run time: up once by content, the loader pointed at it -------------------------------------------------
inputs = core("run.inputs")
transfer = core("transfer")
journal = core("journal")


def whole_plan(p, here=HERE):
    return plan.make_plan(copy.deepcopy(p), table(MEDIA), set(here).__contains__, whole=True).plans[plan.WHOLE]


def files_here(tmp_path):
    data = {"clip.mp4": b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40, "tone.wav": b"RIFF....WAVEfmt " + bytes(300),
            "3d/cube.glb": b"glTF" + bytes(64), "threed/scene_1.png [temp]": b"\x89PNG scene",
            "threed/scene_mask_1.png [temp]": b"\x89PNG mask", "threed/scene_normal_1.png [temp]": b"\x89PNG normal"}
    return data, lambda name: data[name]


def gpugeek(fake):
    from contextlib import asynccontextmanager
    targets, config = core("targets"), core("config")

    @asynccontextmanager
    async def opened():
        async with targets.open_target(config.Config(api_key=config.ApiKey("sk-gg-SECRET-7f3a9c2e1d5b4a60"),
                                                     base_url=fake.base_url)) as t:
            yield t
    return opened()


def test_prepare_uploads_each_file_once_by_content_and_points_the_loaders_at_it(fake, tmp_path):
    data, read = files_here(tmp_path)
    gp = whole_plan(media())
    cache = journal.UploadCache(tmp_path / "uploads.jsonl")

    async def run():
        async with gpugeek(fake) as target:
            return await inputs.prepare(gp, {}, target, cache, read_file=read)
    cloud = asyncio.run(run())
    assert fake.count("put") == 6
    by_url = {u: fake.uploads[u.split("/oss/", 1)[1]] for u in
              [cloud["1"]["inputs"]["file"], cloud["3"]["inputs"]["audio"], cloud["5"]["inputs"]["model_file"]]}
    assert sorted(by_url.values()) == sorted([data["clip.mp4"], data["tone.wav"], data["3d/cube.glb"]])
    assert cloud["1"]["inputs"]["file"].endswith("_clip.mp4") and cloud["5"]["inputs"]["model_file"].endswith(".glb")
    viewer = cloud["5"]["inputs"]["image"]
    assert viewer["image"].endswith("_scene_1.png") and fake.uploads[viewer["image"].split("/oss/", 1)[1]] == data["threed/scene_1.png [temp]"]
    assert viewer["camera_info"] == VIEWER["camera_info"] and viewer["recording"] == ""
    assert gp.prompt["5"]["inputs"]["image"] == VIEWER   # the plan itself is not changed
    # the same content again (another name, a second run): nothing goes up
    again = whole_plan(media(video="same_clip.mp4"), HERE + ("same_clip.mp4",))
    data["same_clip.mp4"] = data["clip.mp4"]

    async def run2():
        async with gpugeek(fake) as target:
            return await inputs.prepare(again, {}, target, cache, read_file=read)
    cloud2 = asyncio.run(run2())
    assert fake.count("put") == 6 and cloud2["1"]["inputs"]["file"] == cloud["1"]["inputs"]["file"]


def test_a_comfyui_server_gets_each_file_where_its_loader_lists_it(tmp_path):
    from fake_comfyui import FakeComfyUI
    targets, config = core("targets"), core("config")
    srv = FakeComfyUI().start()
    try:
        data, read = files_here(tmp_path)

        data["kept.latent"] = b"safetensors latent"
        p = media()
        p["7"] = {"class_type": "LoadLatent", "inputs": {"latent": "kept.latent"}}
        p["8"] = {"class_type": "SaveLatent", "inputs": {"samples": L("7"), "filename_prefix": "l"}}

        async def run():
            async with targets.open_target(config.Config(api_key=None, target=srv.url)) as t:
                return await inputs.prepare(whole_plan(p, HERE + ("kept.latent",)), {}, t,
                                            journal.UploadCache(tmp_path / "u.jsonl"), read_file=read)
        cloud = asyncio.run(run())
    finally:
        srv.stop()
    video, model = cloud["1"]["inputs"]["file"], cloud["5"]["inputs"]["model_file"]
    assert video.startswith("gpugeek/") and srv.inputs[video] == data["clip.mp4"]
    # Load 3D checks its name against the files of input/3d: it goes there
    assert model.startswith("3d/gpugeek/") and model.endswith(".glb") and srv.inputs[model] == data["3d/cube.glb"]
    assert srv.inputs[cloud["5"]["inputs"]["image"]["mask"]] == data["threed/scene_mask_1.png [temp]"]
    # Load Latent checks its name against the top files of input/: it goes there
    latent = cloud["7"]["inputs"]["latent"]
    assert "/" not in latent and latent.endswith(".latent") and srv.inputs[latent] == data["kept.latent"]


def test_a_local_file_is_read_and_its_digest_made_off_the_event_loop(fake, tmp_path, monkeypatch):
    """A video of hundreds of MB takes a second to hash: the digest that names it is made on the thread that reads
    it, never on the event loop (ComfyUI's, answering the editor meanwhile)."""
    import threading
    data, read = files_here(tmp_path)
    hashed_on = []
    real = inputs.digest_bytes
    monkeypatch.setattr(inputs, "digest_bytes", lambda b: hashed_on.append(threading.current_thread()) or real(b))

    async def run():
        loop_thread = threading.current_thread()
        async with gpugeek(fake) as target:
            await inputs.prepare(whole_plan(media()), {}, target, journal.UploadCache(tmp_path / "u.jsonl"),
                                 read_file=read)
        return loop_thread
    loop_thread = asyncio.run(run())
    assert len(hashed_on) == 6 and loop_thread not in hashed_on


def test_a_file_above_the_limit_is_refused_with_its_size_and_the_limit_before_anything_goes_up(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "MAX_UPLOAD_BYTES", 4096)
    big = tmp_path / "big.mp4"
    big.write_bytes(bytes(10 * 1024))
    reads = []

    def read(name):
        reads.append(name)
        return transfer.local_file(big)
    gp = whole_plan({"1": {"class_type": "LoadVideo", "inputs": {"file": "big.mp4"}},
                     "2": {"class_type": "SaveVideo", "inputs": {"video": L("1"), "filename_prefix": "v"}}},
                    ("big.mp4",))

    async def run():
        async with gpugeek(fake) as target:
            return await inputs.prepare(gp, {}, target, journal.UploadCache(tmp_path / "u.jsonl"), read_file=read)
    with pytest.raises(E.PlanError) as ei:
        asyncio.run(run())
    assert ei.value.message == said("err_upload_too_big", "en", node="#1 LoadVideo", file="big.mp4", size="10 KB",
                                    limit="4 KB")
    assert said("err_upload_too_big", "zh", node="#1 LoadVideo", file="big.mp4", size="10 KB", limit="4 KB") \
        == ei.value.message_in("zh")
    assert fake.count("put") == 0 and fake.count("presign") == 0
    # a reader that does not check the size itself is refused too, after reading
    with pytest.raises(E.PlanError):
        asyncio.run(inputs.prepare(gp, {}, None, journal.UploadCache(tmp_path / "v.jsonl"),
                                   read_file=lambda name: big.read_bytes()))


def test_the_limit_is_the_packs_transfer_limit_and_the_node_reader_never_reads_a_file_above_it(tmp_path, monkeypatch):
    transport = core("transport")
    assert transfer.MAX_UPLOAD_BYTES == transport.MAX_DOWNLOAD_BYTES
    import builtins
    monkeypatch.setattr(transfer, "MAX_UPLOAD_BYTES", 10)
    Path(folder_paths.get_input_directory(), "long.wav").write_bytes(bytes(11))
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    with pytest.raises(transfer.TooBig) as ei:
        pack.nodes.cloud.read_input_file("long.wav")
    assert (ei.value.size, ei.value.limit) == (11, 10) and not any("long.wav" in f for f in opened)


@pytest.mark.parametrize("where", ["gpugeek", "comfyui"])
def test_a_file_named_by_six_loaders_is_hashed_once_and_sent_once_from_the_file(fake, tmp_path, monkeypatch, where):
    """Issue 38: six Load Video nodes naming one 64 MiB file held +384 MiB for one upload sent (the file read whole
    once per loader before the first upload). The node's reader names the file; its digest is made once, reading
    it in pieces, and it goes up once, streamed from the file: GPUGeek's signed PUT (its length stated, as storage
    wants) and a ComfyUI server's multipart /upload/image. Memory stays well under the file's size."""
    import builtins
    import hashlib
    import os
    import tracemalloc
    from conftest import comfy_env
    from fake_comfyui import FakeComfyUI
    targets, config = core("targets"), core("config")
    comfy_env(tmp_path)
    size = 64 << 20
    path = Path(folder_paths.get_input_directory(), "long.mp4")
    block, digest = os.urandom(1 << 20), hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size >> 20):
            f.write(block[i:] + block[:i])
            digest.update(block[i:] + block[:i])
    p = {str(i): {"class_type": "LoadVideo", "inputs": {"file": "long.mp4"}} for i in range(1, 7)}
    p.update({str(10 + i): {"class_type": "SaveVideo", "inputs": {"video": L(str(i)), "filename_prefix": f"v{i}"}}
              for i in range(1, 7)})
    gp = whole_plan(p, ("long.mp4",))
    assert len(gp.local_files) == 6
    opened, real_open = [], builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)) if str(f) == str(path) else None)
                        or real_open(f, *a, **k))
    srv = FakeComfyUI().start() if where == "comfyui" else None
    fake.keep_upload_bytes = False
    if srv is not None:
        srv.keep_input_bytes = False

    async def run():
        cfg = config.Config(api_key=config.ApiKey("sk-gg-SECRET-7f3a9c2e1d5b4a60"), base_url=fake.base_url,
                            target=srv.url if srv is not None else "gpugeek")
        async with targets.open_target(cfg) as t:
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                cloud = await inputs.prepare(gp, {}, t, journal.UploadCache(tmp_path / "u.jsonl"),
                                             read_file=pack.nodes.cloud.read_input_file)
                return cloud, tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
    try:
        cloud, peak = asyncio.run(run())
    finally:
        if srv is not None:
            srv.stop()
    assert peak < size // 2, f"{peak / (1 << 20):.0f} MiB held to send a file of {size >> 20} MiB"
    sent = srv.input_digests if srv is not None else fake.upload_digests
    assert list(sent.values()) == [(size, digest.hexdigest())]   # one upload, every byte of the file
    assert len({cloud[str(i)]["inputs"]["file"] for i in range(1, 7)}) == 1
    assert len(opened) <= 2   # read once for its digest, once as it went up


# ---- results: on the node, as that node would show them ------------------------------------------------------
def output():
    return pack.nodes.output


def test_save_video_and_save_audio_show_as_comfyuis_own_savers():
    ui = output().save_as([("http://x/view?filename=clip_00001_.mp4", b"\x00\x00\x00\x18ftypmp42")], "SaveVideo",
                          "video/cats")
    assert ui == {"images": [{"filename": "cats_00001_.mp4", "subfolder": "video", "type": "output"}], "animated": [True]}
    for i, (cls, ext) in enumerate((("SaveAudio", "flac"), ("SaveAudioMP3", "mp3"), ("SaveAudioOpus", "opus"),
                                    ("SaveAudioAdvanced", "mp3"))):
        ui = output().save_as([(f"http://x/o/sound.{ext}", b"....")], cls, "audio/tone")
        name = f"tone_{i + 1:05}_.{ext}"
        assert ui == {"audio": [{"filename": name, "subfolder": "audio", "type": "output"}]}
        assert Path(folder_paths.get_output_directory(), "audio", name).read_bytes() == b"...."


def test_animated_webp_and_png_show_as_animations():
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    ui = output().save_as([("http://x/o/a.png", buf.getvalue())], "SaveAnimatedPNG", "anim")
    assert ui["animated"] == [True] and ui["images"][0]["type"] == "output"
    saved = Path(folder_paths.get_output_directory(), ui["images"][0]["filename"])
    assert getattr(Image.open(saved), "n_frames", 1) == 2   # an animation is kept as it came, not re-encoded


def test_save_glb_shows_its_model_and_the_3d_previews_their_path():
    ui = output().save_as([("http://x/view?filename=mesh_00001_.glb&subfolder=3d", b"glTF....")], "SaveGLB", "3d/ComfyUI")
    assert ui == {"3d": [{"filename": "ComfyUI_00001_.glb", "subfolder": "3d", "type": "output"}]}
    ui = output().save_as([("http://x/view?filename=preview3d_ab.glb", b"glTF")], "Preview3D", "")
    (path, camera, _bg) = ui["result"]
    assert camera is None and Path(folder_paths.get_output_directory(), path).read_bytes() == b"glTF"
    ui = output().save_as([("http://x/view?filename=p.ply&type=temp", b"ply\n")], "PreviewGaussianSplat", "")
    assert ui["result"][0].endswith(".ply") and Path(folder_paths.get_temp_directory(), ui["result"][0]).is_file()


def png(color):
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, "PNG")
    return buf.getvalue()


def test_image_compare_shows_each_side_on_its_own_key():
    files = [("http://x/view?filename=comfy.compare.a_00001_.png&type=temp", png("red")),
             ("http://x/view?filename=comfy.compare.b_00001_.png&type=temp", png("blue"))]
    ui = output().save_as(list(reversed(files)), "ImageCompare", "")
    assert [len(ui["a_images"]), len(ui["b_images"])] == [1, 1]
    a = Image.open(Path(folder_paths.get_temp_directory(), ui["a_images"][0]["filename"])).convert("RGB")
    assert a.getpixel((0, 0)) == (255, 0, 0) and ui["a_images"][0]["type"] == "temp"
    # names that do not say which side: the first half is a, the rest b, in ComfyUI's order
    ui = output().save_as([("http://x/1.png", png("red")), ("http://x/2.png", png("blue"))], "ImageCompare", "")
    b = Image.open(Path(folder_paths.get_temp_directory(), ui["b_images"][0]["filename"])).convert("RGB")
    assert b.getpixel((0, 0)) == (0, 0, 255)


def test_preview_any_shows_the_text_it_came_back_as():
    comfyui = core("targets.comfyui")
    url = comfyui.text_url("a cat, \u732b")
    assert output().save_as([(url, comfyui.text_of(url))], "PreviewAny", "") == {"text": ["a cat, \u732b"]}


def test_a_comfyui_servers_history_brings_back_every_file_and_the_text_of_each_node():
    comfyui = core("targets.comfyui")
    t = comfyui.ComfyUITarget(None, "http://127.0.0.1:8188")
    prompt = {"2": {"class_type": "SaveVideo"}, "4": {"class_type": "SaveAudio"}, "6": {"class_type": "Preview3D"},
              "7": {"class_type": "SaveGLB"}, "8": {"class_type": "ImageCompare"}, "9": {"class_type": "PreviewAny"},
              "10": {"class_type": "Preview3DAdvanced"}}
    entry = {"prompt": [0, "pid", prompt, {}, list(prompt)], "status": {"status_str": "success", "messages": []},
             "outputs": {  # as ComfyUI 0.33.0's nodes write their ui
                 "2": {"images": [{"filename": "clip_00001_.mp4", "subfolder": "video", "type": "output"}],
                       "animated": [True]},
                 "4": {"audio": [{"filename": "tone_00001_.flac", "subfolder": "audio", "type": "output"}]},
                 "6": {"result": ["preview3d_ab.glb", None, None]},
                 "7": {"3d": [{"filename": "ComfyUI_00001_.glb", "subfolder": "3d", "type": "output"}]},
                 "8": {"a_images": [{"filename": "comfy.compare.a_00001_.png", "subfolder": "", "type": "temp"}],
                       "b_images": [{"filename": "comfy.compare.b_00001_.png", "subfolder": "", "type": "temp"}]},
                 "9": {"text": ["{\n    \"a\": 1\n}"]},
                 "10": {"result": ["sub/preview3d_advanced_cd.glb", {"position": [1, 2, 3]}, []]}}}
    urls = t._from_history("pid", entry, {}).result_url
    view = "http://127.0.0.1:8188/view?filename="
    assert urls["2"] == [view + "clip_00001_.mp4&subfolder=video&type=output"]
    assert urls["4"] == [view + "tone_00001_.flac&subfolder=audio&type=output"]
    assert urls["6"] == [view + "preview3d_ab.glb&subfolder=&type=output"]
    assert urls["7"] == [view + "ComfyUI_00001_.glb&subfolder=3d&type=output"]
    assert urls["8"] == [view + "comfy.compare.a_00001_.png&subfolder=&type=temp",
                         view + "comfy.compare.b_00001_.png&subfolder=&type=temp"]
    assert urls["10"] == [view + "preview3d_advanced_cd.glb&subfolder=sub&type=temp"]
    (text,) = urls["9"]
    assert asyncio.run(t.fetch(text)) == "{\n    \"a\": 1\n}".encode()


def test_a_text_too_long_for_the_journal_is_cut_and_says_so():
    comfyui = core("targets.comfyui")
    long = "x" * (comfyui.MAX_TEXT_BYTES + 10)
    back = comfyui.text_of(comfyui.text_url(long)).decode()
    assert back.startswith("x" * 1000) and back.endswith("\u2026") and len(back.encode()) <= comfyui.MAX_TEXT_BYTES + 3


def test_preview_any_on_gpugeek_says_where_its_value_is(wenv, fake):
    from server import PromptServer
    queue(runnable(), wenv, {"gpugeek_whole_workflow": True})
    task_id = next(iter(fake.tasks))
    out = asyncio.run(wenv["GPUGeekCloudOutput"]().show(task_id=task_id, gpugeek_node="3", gpugeek_class="PreviewAny",
                                                             unique_id="3", gpugeek_out_lang="zh"))
    assert out["ui"]["gpugeek"][0] == {"state": "left", "task_id": task_id}
    assert (said("whole_text_in_cloud", "zh", task=task_id), "3") in PromptServer.instance.progress_texts


def test_the_table_names_each_core_loader_and_its_file_input():
    kinds = core("plan.kinds")
    want = {"LoadImage": "image", "LoadImageMask": "image", "LoadVideo": "file", "LoadAudio": "audio",
            "Load3D": "model_file", "Load3DAnimation": "model_file", "VHS_LoadVideo": "video",
            "VHS_LoadAudioUpload": "audio"}
    assert {c: kinds.LOADERS[c].input for c in want} == want
    # the whole workflow refuses no local file of these kinds any more: each is sent
    assert not hasattr(core("plan.passes"), "LOCAL_FILE_LOADERS")
    assert {"SaveVideo", "SaveAudio", "SaveAudioMP3", "SaveAudioOpus", "SaveAudioAdvanced", "SaveGLB", "Preview3D",
            "ImageCompare", "PreviewAny", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveImage",
            "PreviewImage"} <= set(kinds.OUTPUTS)


def test_on_a_v2_target_load_3ds_captures_are_asset_references_too():
    v2 = core("targets.comfy_v2")
    info = {"hash": "blake3:ab", "name": "scene.png"}
    token = v2.ASSET_TOKEN + json.dumps(info)
    sent = v2._with_assets({"5": {"class_type": "Load3D", "inputs": {
        "model_file": token, "image": {"image": token, "recording": "", "camera_info": {"position": [1, 2, 3]}}}}})
    inputs = sent["5"]["inputs"]
    assert inputs["model_file"] == inputs["image"]["image"] == {"__type": "core/ASSET", "info": info}
    assert inputs["image"]["camera_info"] == {"position": [1, 2, 3]} and inputs["image"]["recording"] == ""


def test_the_gateway_reruns_when_a_local_file_changes_and_hashes_a_long_video_in_bounded_memory():
    import tracemalloc
    gw = pack.nodes.gateway.GPUGeekCloudExecute
    clip = Path(folder_paths.get_input_directory(), "long_clip.mp4")
    clip.write_bytes(bytes(48 * 1024 * 1024))
    text = plan.GatewayPlan(gateway="g", mode="cloud", local_files=[plan.LocalFile(node="1", file="long_clip.mp4",
                                                                                   input="file")]).to_json()
    tracemalloc.start()
    try:
        first = gw.IS_CHANGED(gpugeek_plan=text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak   # read in pieces, never held whole
    assert gw.IS_CHANGED(gpugeek_plan=text) == first
    with open(clip, "r+b") as f:
        f.seek(20 * 1024 * 1024)
        f.write(b"x")
    assert gw.IS_CHANGED(gpugeek_plan=text) != first


def test_several_local_videos_go_up_at_once_and_come_back_at_once_byte_for_byte(wenv, fake):
    """Issue 33: a whole workflow with three clips of this machine. The fake holds every upload's answer, then
    every download's, until the test has counted the requests that came meanwhile: all three uploads are in
    flight together, and all three downloads; each Save Video keeps the very bytes its Load Video sent."""
    import threading
    from conftest import until
    from mini_comfy import stub_class
    classes = {**wenv, "LoadVideo": stub_class("LoadVideo", {"file": ("STRING",)}, ("VIDEO",)),
               "SaveVideo": stub_class("SaveVideo", {"video": ("VIDEO",)}, (), True)}
    clips, p = {}, {}
    for i in range(3):
        clips[f"clip{i}.mp4"] = bytes([i]) * 4096 + b"\x00\x00\x00\x18ftypmp42" * (i + 1)
        Path(folder_paths.get_input_directory(), f"clip{i}.mp4").write_bytes(clips[f"clip{i}.mp4"])
        p[str(10 + i)] = {"class_type": "LoadVideo", "inputs": {"file": f"clip{i}.mp4"}}
        p[str(20 + i)] = {"class_type": "SaveVideo", "inputs": {"video": L(str(10 + i)), "filename_prefix": f"v/c{i}"}}
    fake.fault("put", *["held"] * 3)
    fake.fault("file", *["held"] * 3)
    fake.task_opts.update(run_s=3600)   # it ends when the test has held the downloads anew (fake.finish)
    seen, done = {}, {}
    worker = threading.Thread(target=lambda: done.update(out=queue(p, classes, {"gpugeek_whole_workflow": True})))
    worker.start()
    try:
        until(lambda: fake.count("put") >= 3, 10)
        seen["up"] = fake.count("put")
        fake.released.set()                      # the uploads' answers go, then the task is submitted
        until(lambda: len(fake.tasks) >= 1, 30)
        fake.released.clear()                    # the downloads are held (every upload was answered: it came after)
        seen["held"] = fake.count("file") == 0
        fake.finish(list(fake.tasks.values())[-1])
        until(lambda: fake.count("file") >= 3, 30)
        seen["down"] = fake.count("file")
    finally:
        fake.release()
        worker.join(60)
    assert seen == {"up": 3, "held": True, "down": 3} and fake.unreleased == 0
    _, ui, _ = done["out"]
    for i in range(3):
        (f,) = ui[str(20 + i)]["images"]
        assert Path(folder_paths.get_output_directory(), f["subfolder"], f["filename"]).read_bytes() == clips[f"clip{i}.mp4"]


# ---- stills only from an allow-list of formats, their size read first; Preview Any's text capped (issue 38, 7) ----
EXOTIC = ("TIFF", "BMP", "ICO", "PPM", "PCX", "TGA", "SGI", "DDS", "EPS")


def exotic(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, fmt)
    return buf.getvalue()


def huge_jpeg(w: int = 13000, h: int = 13000) -> bytes:
    """A tiny JPEG whose frame header (SOF0) claims ``w`` x ``h``: what a decoder would allocate, cheaply."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = h.to_bytes(2, "big") + w.to_bytes(2, "big")
    return bytes(data)


@pytest.fixture
def pillow_spy(monkeypatch):
    """What Pillow opened (its format) and decoded (its size), whoever asked."""
    import PIL.Image
    import PIL.ImageFile
    seen = {"opened": [], "loaded": []}
    real_open, real_load = PIL.Image.open, PIL.ImageFile.ImageFile.load

    def spy_open(*a, **kw):
        im = real_open(*a, **kw)
        seen["opened"].append(im.format)
        return im

    def spy_load(self):
        seen["loaded"].append(self.size)
        return real_load(self)
    monkeypatch.setattr(PIL.Image, "open", spy_open)
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", spy_load)
    return seen


@pytest.mark.parametrize("fmt", EXOTIC)
def test_a_still_in_another_format_is_kept_as_it_came_and_never_opened(fmt, pillow_spy):
    data = exotic(fmt)
    said_here = []
    ui = output().save_as([("http://x/view?filename=odd_00001_.jpg", data)], "SaveImage", f"odd/{fmt}",
                          notes=said_here)
    assert set(pillow_spy["opened"]) <= {"PNG", "JPEG", "WEBP", "GIF"}   # never TIFF, BMP, ..., EPS (Ghostscript)
    kept = Path(folder_paths.get_output_directory(), "odd", f"{fmt}_00001_.jpg")
    assert kept.read_bytes() == data   # nothing lost: the file as it came, under its own name
    assert ui.get("images", []) == []  # the editor is not asked to show what is no PNG, JPEG or WebP
    (note,) = said_here
    assert note.key == "whole_still_kept" and f"{fmt}_00001_.jpg" in note.text("en") and note.text("zh") != note.text("en")


def test_a_jpeg_whose_header_claims_13000_squared_is_kept_undecoded(pillow_spy):
    codec = core("codec")
    data = huge_jpeg()
    said_here = []
    ui = output().save_as([("http://x/view?filename=big_00001_.jpg", data)], "SaveImage", "big", notes=said_here)
    assert all(w * h <= codec.MAX_PIXELS for w, h in pillow_spy["loaded"])   # its size read, nothing decoded
    assert Path(folder_paths.get_output_directory(), "big_00001_.jpg").read_bytes() == data
    assert ui.get("images", []) == [] and [n.key for n in said_here] == ["whole_still_kept"]
    # and an allowed still of a sane size is still written as PNG with this machine's metadata
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, "JPEG")
    ui = output().save_as([("http://x/view?filename=ok.jpg", buf.getvalue())], "SaveImage", "big")
    assert [i["filename"] for i in ui["images"]] == ["big_00002_.png"]


def test_the_codec_reads_a_huge_jpegs_size_before_decoding_it(pillow_spy):
    codec = core("codec")
    with pytest.raises(E.ResultError, match="megapixel"):
        codec.decode_array(huge_jpeg())
    with pytest.raises(E.ResultError, match="megapixel"):
        codec.header(huge_jpeg())
    assert pillow_spy["loaded"] == []
    for fmt in EXOTIC:
        with pytest.raises(E.ResultError):
            codec.decode_array(exotic(fmt))
    assert set(pillow_spy["opened"]) <= {"PNG", "JPEG", "WEBP", "GIF"}


def test_preview_any_shows_a_capped_text_and_keeps_the_whole_and_never_shows_a_binary():
    out = output()
    long = ("a cat, \u732b\n" * 40000).encode()   # ~440 KB of text
    said_here = []
    ui = out.save_as([("http://x/view?filename=said.txt&type=temp", long)], "PreviewAny", "", notes=said_here,
                     lang="zh")
    (shown,) = ui["text"]
    assert len(shown.encode()) <= out.MAX_SHOWN_TEXT + 1024 and shown.startswith("a cat, \u732b\n")
    (note,) = said_here
    assert note.key == "whole_text_cut" and note.text("zh") in shown
    whole = Path(folder_paths.get_temp_directory(), note.values["file"])
    assert whole.read_bytes() == long   # the whole text, where the sentence says
    binary = bytes(range(256)) * 4096     # 1 MiB that is no text
    said_here = []
    ui = out.save_as([("http://x/view?filename=blob.txt&type=temp", binary)], "PreviewAny", "", notes=said_here)
    assert "text" not in ui and [n.key for n in said_here] == ["whole_binary_kept"]
    assert Path(folder_paths.get_temp_directory(), said_here[0].values["file"]).read_bytes() == binary
    # a short text is shown whole, as before
    assert out.save_as([("http://x/view?filename=s.txt", b"a dog")], "PreviewAny", "") == {"text": ["a dog"]}
