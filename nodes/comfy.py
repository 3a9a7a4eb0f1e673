"""The only place the node layer touches ComfyUI's modules (imported lazily, so tests can stub them)."""
from __future__ import annotations

import os


def folder_paths():
    import folder_paths as fp
    return fp


def output_dir() -> str:
    return folder_paths().get_output_directory()


def temp_dir() -> str:
    return folder_paths().get_temp_directory()


def user_dir() -> str:
    return folder_paths().get_user_directory()


def input_file(name: str) -> str | None:
    """Path of a LoadImage-style file name in the input folder, if it exists there."""
    fp = folder_paths()
    try:
        path = fp.get_annotated_filepath(name)
    except Exception:
        return None
    if name.endswith(" [output]"):
        base = fp.get_output_directory()
    elif name.endswith(" [temp]"):
        base = fp.get_temp_directory()
    else:
        base = fp.get_input_directory()
    base, real = os.path.realpath(base), os.path.realpath(path)
    if os.path.commonpath([base, real]) != base:  # "../" never reaches a file outside ComfyUI's folders
        return None
    return real if os.path.isfile(real) else None


def interrupted() -> bool:
    import comfy.model_management as mm
    return mm.processing_interrupted()


def raise_interrupt():
    import comfy.model_management as mm
    mm.throw_exception_if_processing_interrupted()
    raise mm.InterruptProcessingException()


def server():
    try:
        from server import PromptServer
    except Exception:
        return None
    return PromptServer.instance


def progress_text(text: str, node_id) -> None:
    s = server()
    if s is not None and node_id is not None and hasattr(s, "send_progress_text"):
        try:
            s.send_progress_text(text, str(node_id))
        except Exception:
            pass


def send(event: str, data: dict) -> None:
    s = server()
    if s is not None:
        try:
            s.send_sync(event, data, getattr(s, "client_id", None))
        except Exception:
            pass


class Bar:
    """ComfyUI's progress bar for one node, or nothing where ComfyUI is too old to target a node."""

    def __init__(self, node_id, total: int = 100):
        try:
            import comfy.utils
            try:
                self._bar = comfy.utils.ProgressBar(total, node_id=node_id)
            except TypeError:  # ComfyUI before 0.3.44
                self._bar = comfy.utils.ProgressBar(total)
        except Exception:
            self._bar = None

    def set(self, value: float, total: int = 100) -> None:
        if self._bar is not None:
            try:
                self._bar.update_absolute(max(0, min(total, int(value))), total)
            except Exception as e:
                # ComfyUI's progress hook raises a pending Stop and clears it; put it back, so the gateway's
                # wait (which checks every 50 ms) sees it and cancels the remote task
                if type(e).__name__ == "InterruptProcessingException":
                    import comfy.model_management as mm
                    mm.interrupt_current_processing(True)


class _LazyInputs:
    """A node class's input types, read from INPUT_TYPES only when the plan asks (some classes list
    folders there, which must not slow down every queued prompt)."""

    def __init__(self, cls):
        self._cls, self._map = cls, None

    def _load(self):
        if self._map is None:
            self._map = {}
            try:
                spec = self._cls.INPUT_TYPES()
                for cat in ("required", "optional"):
                    for k, v in (spec.get(cat) or {}).items():
                        if isinstance(v, (tuple, list)) and v:
                            self._map[k] = v[0] if isinstance(v[0], str) else "COMBO"
            except Exception:
                pass
        return self._map

    def __contains__(self, k):
        return k in self._load()

    def __getitem__(self, k):
        return self._load()[k]


class ClassTable:
    """``get(class_type)`` -> ClassInfo for installed classes, None for others; cached per class object."""

    def __init__(self):
        self._cache: dict = {}

    def get(self, name, default=None):
        from nodes import NODE_CLASS_MAPPINGS
        from ..offload.plan import ClassInfo
        cls = NODE_CLASS_MAPPINGS.get(name)
        if cls is None:
            return default
        hit = self._cache.get(name)
        if hit is not None and hit[0] is cls:
            return hit[1]
        outs = tuple(t if isinstance(t, str) else "COMBO" for t in (getattr(cls, "RETURN_TYPES", ()) or ()))
        info = ClassInfo(outs, bool(getattr(cls, "OUTPUT_NODE", False)), _LazyInputs(cls), spec=cls.INPUT_TYPES)
        self._cache[name] = (cls, info)
        return info


CLASSES = ClassTable()
