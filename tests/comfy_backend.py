"""Runs the fake GPUGeek's tasks on a real ComfyUI server (a stand-in for GPUGeek's hosted ComfyUI).

A cloud LoadImage that names an uploaded object by URL is given the object's bytes through the server's
/upload/image first (plain ComfyUI cannot read URLs; GPUGeek's hosted one can). Results are read from
/history and /view and served by the fake like GPUGeek's result URLs.
"""
from __future__ import annotations

import copy
import time
import uuid

import requests


class ComfyBackend:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = "fake-gpugeek-" + uuid.uuid4().hex[:8]
        self.running: dict = {}

    def run(self, prompt: dict, fake) -> dict:
        prompt = copy.deepcopy(prompt)
        for node in prompt.values():
            if node.get("class_type") in ("LoadImage", "LoadImageMask"):
                img = str(node["inputs"].get("image", ""))
                if "/oss/" in img:
                    key = img.split("/oss/", 1)[1].split("?")[0]
                    data = fake.uploads[key]
                    name = key.replace("/", "_")
                    r = requests.post(self.url + "/upload/image", files={"image": (name, data, "image/png")},
                                      data={"overwrite": "true"}, timeout=30)
                    r.raise_for_status()
                    node["inputs"]["image"] = r.json()["name"]
        r = requests.post(self.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(r.text[:20000])  # the hosted ComfyUI's answer, passed on as error_msg
        pid = r.json()["prompt_id"]
        self.running[pid] = True
        while True:
            h = requests.get(f"{self.url}/history/{pid}", timeout=30).json()
            if pid in h:
                break
            time.sleep(0.1)
        entry = h[pid]
        status = entry.get("status", {})
        if status.get("status_str") == "error":
            msgs = [m for m in status.get("messages", []) if m[0] == "execution_error"]
            raise RuntimeError(msgs[0][1].get("exception_message", "error") if msgs else "execution failed")
        files = {}
        for node, out in entry.get("outputs", {}).items():
            for im in out.get("images", []):
                data = requests.get(self.url + "/view", params=im, timeout=60).content
                files.setdefault(node, []).append((im["filename"], data))
        return files

    def cancel(self, task) -> None:
        try:
            requests.post(self.url + "/interrupt", timeout=10)
        except Exception:
            pass
