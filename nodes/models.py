"""Models where the workflow runs (issue 40), the node layer's part: ComfyUI's model folders (folder_paths,
extra_model_paths.yaml included) for the client's ModelSource and the server's Receiver (offload/receive.py)."""
from __future__ import annotations

import functools
import os

from ..offload import config, receive
from ..offload.run.models import ModelSource
from . import comfy

# folder_paths kinds that hold no models (what a cloud node's value names is never looked for there)
_NOT_MODELS = {"custom_nodes", "configs"}


def _kinds() -> list:
    fp = comfy.folder_paths()
    return [k for k in getattr(fp, "folder_names_and_paths", {}) if k not in _NOT_MODELS]


def find_model(value: str, class_type: str | None = None, input: str | None = None):
    """(kind, path) of a model file of this machine's folders that ``value`` names, None where none does. Where the
    node's class is installed here, only an input whose list offers ``value`` names a model (never a text that
    happens to end in .safetensors); a class only the cloud has is taken at its value's word."""
    if class_type and not _offered(class_type, input, value):
        return None
    fp = comfy.folder_paths()
    found = []
    for kind in _kinds():
        try:
            if value in fp.get_filename_list(kind):
                path = fp.get_full_path(kind, value)
                if path and os.path.isfile(path):
                    found.append((kind, path))
        except Exception:  # a folder ComfyUI cannot list: not this one
            continue
    # a name in two kinds' folders: the kind the input names (lora_name -> loras, vae_name -> vae), else the first
    said = str(input or "").lower()
    found.sort(key=lambda kp: kp[0].rstrip("s").lower() not in said)
    return found[0] if found else None


def _offered(class_type: str, input: str | None, value: str) -> bool:
    from ..offload.specs import combo_values
    info = comfy.CLASSES.get(class_type)
    if info is None:
        return True
    try:
        spec = info.spec() or {}
        entry = (spec.get("required") or {}).get(input) or (spec.get("optional") or {}).get(input)
    except Exception:  # a class that cannot list its inputs: its value's word
        return True
    choices = combo_values(entry) if entry is not None else None
    return choices is not None and value in [str(c) for c in choices]


@functools.lru_cache(maxsize=1)
def _hashes(path: str):
    return receive.ShaCache(path)


def model_source(templates: dict) -> ModelSource:
    return ModelSource(find=find_model, templates=dict(templates or {}),
                       hashes=_hashes(str(config.data_dir() / "model_sha.json")))


def _on(env_key: str, setting: str) -> bool:
    raw = os.environ.get(env_key, "").strip().lower()
    if raw:
        return raw in ("1", "true", "yes", "on")
    return bool(config.load_settings().get(setting))


_receivers: dict = {}


def receiver():
    """The server's receiver while receiving is on (GPUGEEK_RECEIVE_MODELS=1 or the setting ``receive_models``), else
    None (the routes answer 404)."""
    if not _on("GPUGEEK_RECEIVE_MODELS", "receive_models"):
        return None
    key = (_on("GPUGEEK_RECEIVE_PICKLE", "receive_pickle"), os.environ.get("GPUGEEK_RECEIVE_TOKEN", "").strip(),
           receive.max_model_bytes(), str(config.data_dir()))
    if key not in _receivers:
        fp = comfy.folder_paths()

        def roots(kind):
            if kind in _NOT_MODELS:
                return []
            try:   # ComfyUI maps a legacy kind ("unet" -> "diffusion_models") itself
                return list(fp.get_folder_paths(kind))
            except Exception:  # a kind this ComfyUI does not keep
                return []
        _receivers.clear()
        _receivers[key] = receive.Receiver(roots, allow_pickle=key[0], token=key[1] or None, max_bytes=key[2],
                                           index_path=config.data_dir() / "received_models.json")
    return _receivers[key]
