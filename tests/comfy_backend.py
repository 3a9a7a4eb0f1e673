"""Runs the fake GPUGeek's tasks on a real ComfyUI server (a stand-in for GPUGeek's hosted ComfyUI).

A cloud loader that names an uploaded object by URL (LoadImage, and as GPUGEEK_API.md reads the platform, every
loader: LoadVideo, LoadAudio, Load3D...) is given the object's bytes through the server's /upload/image first
(plain ComfyUI cannot read URLs; GPUGeek's hosted one can). Results are every file a node's ui names, read from
/history and /view and served by the fake like GPUGeek's result URLs (files only: a text a node shows does not
come back).
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
            inputs = node.get("inputs") or {}
            for name, value in list(inputs.items()):
                if isinstance(value, str) and value.startswith(fake.base_url + "/oss/"):
                    inputs[name] = self._put(fake, value)
                elif isinstance(value, dict):   # Load 3D's viewer captures
                    inputs[name] = {k: self._put(fake, v) if isinstance(v, str) and v.startswith(fake.base_url + "/oss/")
                                    else v for k, v in value.items()}
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
            for items in out.values():
                for f in items if isinstance(items, list) else []:
                    if isinstance(f, dict) and f.get("filename"):
                        data = requests.get(self.url + "/view", params=f, timeout=60).content
                        files.setdefault(node, []).append((f["filename"], data))
        return files

    def _put(self, fake, url: str) -> str:
        """The uploaded object in the server's input folder; its name there (as the hosted ComfyUI reads URLs)."""
        key = url.split("/oss/", 1)[1].split("?")[0]
        r = requests.post(self.url + "/upload/image", files={"image": (key.replace("/", "_"), fake.uploads[key])},
                          data={"overwrite": "true"}, timeout=30)
        r.raise_for_status()
        return r.json()["name"]

    def cancel(self, task) -> None:
        try:
            requests.post(self.url + "/interrupt", timeout=10)
        except Exception:
            pass
