"""The only place the node layer touches ComfyUI's modules (imported lazily, so tests can stub them)."""
from __future__ import annotations

import os
import threading


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
        info = ClassInfo(outs, bool(getattr(cls, "OUTPUT_NODE", False)), _LazyInputs(cls), spec=cls.INPUT_TYPES,
                         finalize=_finalizer(cls), validated=_validated(cls), machine=_MachineLists(cls))
        self._cache[name] = (cls, info)
        return info


CLASSES = ClassTable()


# ---- what ComfyUI's validation reads of a class besides INPUT_TYPES (execution.py, validate_inputs) ----------

def _v3_io():
    """ComfyUI's node schema module where this ComfyUI has it (the newer node classes, dynamic inputs)."""
    try:
        from comfy_api.latest import _io
        return _io
    except Exception:
        return None


def _is_v3(cls) -> bool:
    try:
        from comfy_api.internal import _ComfyNodeInternal
    except Exception:
        return False
    return isinstance(cls, type) and issubclass(cls, _ComfyNodeInternal)


def _finalizer(cls):
    """For a class of the newer schema: ComfyUI's own reading of its dynamic inputs (an autogrow input named
    ``values`` arrives as ``values.a``, ``values.b``) for a node's inputs; None for other classes."""
    io = _v3_io()
    finalize = getattr(io, "get_finalized_class_inputs", None) if io is not None else None
    if finalize is None or not _is_v3(cls):
        return None

    def read(spec: dict, inputs: dict) -> dict:
        return finalize(spec, inputs)[0]
    return read


def _validated(cls) -> frozenset:
    """The inputs ComfyUI lets the class judge (its VALIDATE_INPUTS' arguments; every input with **kwargs)."""
    import inspect
    if _is_v3(cls):
        try:
            from comfy_api.internal import first_real_override
            fn = first_real_override(cls, "validate_inputs")
        except Exception:
            fn = None
    else:
        fn = getattr(cls, "VALIDATE_INPUTS", None)
    if fn is None:
        return frozenset()
    try:
        spec = inspect.getfullargspec(fn)
    except TypeError:
        return frozenset()
    from ..offload.plan.check import ALL_INPUTS
    return frozenset(spec.args) | ({ALL_INPUTS} if spec.varkw is not None else set())


# The folder lists a class is asked for while it is probed (``_MachineLists``): names no real folder holds, one
# per common extension (a class may keep only some), and an input folder holding one file of each kind.
_PROBE = threading.local()
_PROBE_NAMES = tuple(f"gpugeek-probe{ext}" for ext in (
    ".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx", ".json", ".yaml", ".png", ".mp4",
    ".wav", ".glb"))
_PROBE_INPUT_FILES = ("gpugeek-probe.png", "gpugeek-probe.webp", "gpugeek-probe.mp4", "gpugeek-probe.webm",
                      "gpugeek-probe.wav", "gpugeek-probe.mp3", "gpugeek-probe.flac", "gpugeek-probe.glb",
                      "3d/gpugeek-probe.glb", "3d/gpugeek-probe.obj")
_probe_lock = threading.Lock()
_probe_input: list = []


def _probe_input_dir() -> str:
    with _probe_lock:
        if not _probe_input:
            import tempfile
            base = tempfile.mkdtemp(prefix="gpugeek-probe-")
            for name in _PROBE_INPUT_FILES:
                path = os.path.join(base, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "wb").close()
            _probe_input.append(base)
        return _probe_input[0]


def install_probe() -> None:
    """Wraps ComfyUI's folder listings once (calling the originals): while this thread probes a class, each
    list has the probe's names too and the input folder is the probe's; for everyone else nothing changes."""
    fp = folder_paths()
    if getattr(fp, "_gpugeek_probe", False):
        return
    listing, input_dir = fp.get_filename_list, fp.get_input_directory

    def get_filename_list(*args, **kwargs):
        names = listing(*args, **kwargs)
        return list(names) + list(_PROBE_NAMES) if getattr(_PROBE, "on", False) else names

    def get_input_directory(*args, **kwargs):
        return _probe_input_dir() if getattr(_PROBE, "on", False) else input_dir(*args, **kwargs)
    fp.get_filename_list, fp.get_input_directory = get_filename_list, get_input_directory
    fp._gpugeek_probe = True


class _MachineLists:
    """``()`` -> the names of a class's inputs whose lists this machine fills (model folders, the input folder):
    its INPUT_TYPES read as usual and again while the folders are probed; a list that changes is this machine's.
    Read once per class, the first time a value is not among its choices."""

    def __init__(self, cls):
        self._cls, self._names = cls, None

    def __call__(self) -> frozenset:
        if self._names is None:
            install_probe()
            plain = _combos(self._cls.INPUT_TYPES())
            _PROBE.on = True
            try:
                probed = _combos(self._cls.INPUT_TYPES())
            finally:
                _PROBE.on = False
            self._names = frozenset(n for n in set(plain) | set(probed) if plain.get(n) != probed.get(n))
        return self._names


def _combos(spec) -> dict:
    """Input name -> its choices (as text), for the inputs of ``spec`` (INPUT_TYPES) that are lists."""
    from ..offload.specs import combo_values
    out = {}
    for cat in ("required", "optional"):
        for name, entry in ((spec or {}).get(cat) or {}).items():
            choices = combo_values(entry)
            if choices is not None:
                out[name] = [str(c) for c in choices]
    return out
