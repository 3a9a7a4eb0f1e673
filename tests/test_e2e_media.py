"""End to end in a real ComfyUI: a local video and a local audio file go to the cloud (whole workflow, and a
gateway's cloud part), once by content, and what the cloud's Save Video, Save Audio and Preview Any made lands
on those very nodes here, as if they had run here. Against the GPUGeek-compatible fake whose tasks run on a
second real ComfyUI (which reads the uploads by URL, as the platform's loaders do), and against that second
ComfyUI as a target itself (uploads through /upload/image; Preview Any's text from its history). Skipped unless
COMFYUI_DIR is set (see tests/test_e2e_comfyui.py); the media are made with the ComfyUI's own PyAV."""
from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import requests

from real_comfyui import cloud_saved
from test_e2e_comfyui import COMFY, PY, WF, history, stack, stats  # noqa: F401  (stack: this module's own)

pytestmark = pytest.mark.skipif(not COMFY, reason="COMFYUI_DIR is not set")
FRAMES, FPS = 8, 8
MAKE_VIDEO = """
import sys, av, numpy as np
c = av.open(sys.argv[1], "w")
s = c.add_stream("mpeg4", rate=%d)
s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
for i in range(%d):
    a = np.zeros((48, 64, 3), np.uint8); a[..., 0] = 30 * i; a[:, : 8 * (i + 1), 1] = 255
    for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")): c.mux(p)
for p in s.encode(): c.mux(p)
c.close()
""" % (FPS, FRAMES)
COUNT_FRAMES = "import sys, av; print(sum(1 for _ in av.open(sys.argv[1]).decode(video=0)))"


@pytest.fixture(scope="module")
def stack_env():
    return {"GPUGEEK_WHOLE_WORKFLOW": "1", "GPUGEEK_WORKFLOW_ID": WF}


@pytest.fixture(scope="module")
def media(stack):
    """A short video and a tone, only in this ComfyUI's input folder."""
    folder = stack["tmp"] / "comfyui-local" / "input"
    subprocess.run([PY, "-c", MAKE_VIDEO, str(folder / "clip.mp4")], check=True, timeout=60)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.sin(np.arange(8000) * 2 * np.pi * 440 / 16000) * 12000).astype("<i2").tobytes())
    (folder / "tone.wav").write_bytes(buf.getvalue())
    return {"clip.mp4": (folder / "clip.mp4").read_bytes(), "tone.wav": buf.getvalue()}


def graph(tag):
    """As downloaded: no gateway; the video saved again, the audio saved again, the video's rate shown."""
    return {"1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
            "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": f"{tag}/clip",
                                                        "format": "auto", "codec": "auto"}},
            "3": {"class_type": "LoadAudio", "inputs": {"audio": "tone.wav"}},
            "4": {"class_type": "SaveAudio", "inputs": {"audio": ["3", 0], "filename_prefix": f"{tag}/tone"}},
            "5": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
            "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 2]}}}


def run(stack, prompt):
    r = requests.post(stack["local"] + "/prompt", json={"prompt": prompt, "client_id": "e2e-media"}, timeout=30)
    assert r.status_code == 200, r.text
    h = history(stack, r.json()["prompt_id"])
    assert h["status"]["status_str"] == "success", h["status"]
    return h


def frames(path) -> int:
    return int(subprocess.run([PY, "-c", COUNT_FRAMES, str(path)], check=True, capture_output=True, text=True,
                              timeout=60).stdout)


def landed(stack, h, tag):
    """The video and the audio on their own nodes here, byte for byte what the cloud's savers wrote."""
    (video,) = h["outputs"]["2"]["images"]
    assert h["outputs"]["2"]["animated"] == [True] and video["type"] == "output" and video["subfolder"] == tag
    here = stack["tmp"] / "out" / tag / video["filename"]
    cloud = cloud_saved(stack["tmp"], Path(video["filename"]).suffix)
    assert video["filename"].endswith(cloud.suffix) and here.read_bytes() == cloud.read_bytes()
    assert frames(here) == FRAMES
    (audio,) = h["outputs"]["4"]["audio"]
    assert audio["type"] == "output" and audio["subfolder"] == tag and audio["filename"].endswith(".flac")
    cloud_audio = cloud_saved(stack["tmp"], ".flac")
    assert (stack["tmp"] / "out" / tag / audio["filename"]).read_bytes() == cloud_audio.read_bytes()
    shown = requests.get(stack["local"] + "/view", params=audio, timeout=10)   # as the editor plays it
    assert shown.status_code == 200 and shown.content[:4] == b"fLaC"


def test_a_local_video_and_audio_go_up_once_and_land_on_save_video_and_save_audio(stack, media):
    before = stats(stack)
    h = run(stack, graph("media"))
    (task,) = [t for t in stats(stack)["tasks"] if t["prompt_id"] not in {x["prompt_id"] for x in before["tasks"]}]
    cloud = task["prompt"]
    # the loaders read the uploads by URL: the files of this machine, byte for byte
    for node, name in (("1", "file"), ("3", "audio")):
        url = cloud[node]["inputs"][name]
        assert "/oss/" in url and requests.get(url, timeout=10).content == media[{"1": "clip.mp4", "3": "tone.wav"}[node]]
    assert stats(stack)["calls"]["put"] - before["calls"].get("put", 0) == 2
    landed(stack, h, "media")
    # GPUGeek returns files only: Preview Any's text stays there, and the node says where
    assert "text" not in h["outputs"].get("6", {})
    # again, other names for the results: nothing goes up a second time
    puts = stats(stack)["calls"]["put"]
    landed(stack, run(stack, graph("again")), "again")
    assert stats(stack)["calls"]["put"] == puts


@pytest.fixture
def comfy_target(stack):
    """The whole workflow's target set to the second ComfyUI (as Settings > GPUGeek saves it), then back."""
    r = requests.post(stack["local"] + "/gpugeek/config", json={"target": stack["cloud"]}, timeout=10)
    assert r.json()["ok"], r.text
    yield stack["cloud"]
    requests.post(stack["local"] + "/gpugeek/config", json={"target": ""}, timeout=10)


def test_on_a_comfyui_server_the_files_go_up_by_upload_and_preview_any_shows_its_text(stack, media, comfy_target):
    h = run(stack, graph("server"))
    landed(stack, h, "server")
    assert [float(v) for v in h["outputs"]["6"]["text"]] == [float(FPS)]   # computed there, shown here
    sent = stack["tmp"] / "comfyui-cloud" / "input" / "gpugeek"
    assert {f.read_bytes() for f in sent.iterdir() if f.suffix in (".mp4", ".wav")} == {media["clip.mp4"], media["tone.wav"]}


def test_a_gateways_cloud_part_reads_the_local_video_on_a_comfyui_server(stack, media):
    p = {"1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
         "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
         "10": {"class_type": "GPUGeekCloudExecute", "inputs": {"workflow_id": "", "run_on": "cloud", "timeout_s": 120,
                                                                "image_1": ["2", 0], "target": stack["cloud"]}},
         "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": "gateway/frames"}}}
    h = run(stack, p)
    assert len(h["outputs"]["11"]["images"]) == FRAMES   # every frame of the local video, back from the cloud
    assert sorted(h["prompt"][2]) == ["10", "11"]        # the loader ran there, not here
