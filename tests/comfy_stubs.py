"""Small stand-ins for the ComfyUI modules the node layer imports (CI has no ComfyUI)."""
import sys
import types


def install():
    if "folder_paths" in sys.modules and getattr(sys.modules["folder_paths"], "_gpugeek_stub", False):
        return
    import tempfile
    base = tempfile.mkdtemp(prefix="comfy-stub-")
    import atexit
    import os
    import shutil
    atexit.register(shutil.rmtree, base, True)   # the stand-in's folders go with the test process
    for d in ("input", "output", "temp", "user"):
        os.makedirs(os.path.join(base, d), exist_ok=True)

    fp = types.ModuleType("folder_paths")
    fp._gpugeek_stub = True
    fp.base = base
    fp.get_input_directory = lambda: os.path.join(fp.base, "input")
    fp.get_output_directory = lambda: os.path.join(fp.base, "output")
    fp.get_temp_directory = lambda: os.path.join(fp.base, "temp")
    fp.get_user_directory = lambda: os.path.join(fp.base, "user")

    def annotated(name, default_dir=None):
        for suffix, getter in ((" [output]", fp.get_output_directory), (" [input]", fp.get_input_directory),
                               (" [temp]", fp.get_temp_directory)):
            if name.endswith(suffix):
                return os.path.join(getter(), name[: -len(suffix)])
        return os.path.join(default_dir or fp.get_input_directory(), name)
    fp.get_annotated_filepath = annotated
    fp.exists_annotated_filepath = lambda name: os.path.exists(annotated(name))
    fp.get_filename_list = lambda folder: []

    def get_save_image_path(prefix, output_dir, width=0, height=0):
        """As ComfyUI's: the prefix's folder under ``output_dir`` (never outside it), its name, and the next
        counter after the highest ``name_NNNNN_`` already there."""
        import re
        subfolder, name = os.path.split(os.path.normpath(prefix))
        folder = os.path.join(output_dir, subfolder)
        if os.path.commonpath((os.path.abspath(output_dir), os.path.abspath(folder))) != os.path.abspath(output_dir):
            raise Exception("Saving image outside the output folder is not allowed.")
        os.makedirs(folder, exist_ok=True)
        pat = re.compile(re.escape(name) + r"_(\d+)_")
        counts = [int(m.group(1)) for f in os.listdir(folder) if (m := pat.match(f))]
        return folder, name, max(counts, default=0) + 1, subfolder, prefix
    fp.get_save_image_path = get_save_image_path
    sys.modules["folder_paths"] = fp

    comfy = types.ModuleType("comfy")
    mm = types.ModuleType("comfy.model_management")

    class InterruptProcessingException(Exception):
        pass
    mm.InterruptProcessingException = InterruptProcessingException
    mm.interrupt_flag = False

    def processing_interrupted():
        return mm.interrupt_flag

    def throw_exception_if_processing_interrupted():
        if mm.interrupt_flag:
            mm.interrupt_flag = False
            raise InterruptProcessingException()
    mm.processing_interrupted = processing_interrupted
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    mm.interrupt_current_processing = lambda value=True: setattr(mm, "interrupt_flag", value)

    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        instances = []

        def __init__(self, total, node_id=None):
            self.total, self.current, self.node_id = total, 0, node_id
            ProgressBar.instances.append(self)

        def update_absolute(self, value, total=None, preview=None):
            # as ComfyUI's global progress hook (main.py) does: a pending Stop raises here, and is consumed
            mm.throw_exception_if_processing_interrupted()
            if total is not None:
                self.total = total
            self.current = value

        def update(self, value):
            self.update_absolute(self.current + value)
    utils.ProgressBar = ProgressBar
    comfy.model_management = mm
    comfy.utils = utils
    sys.modules["comfy"] = comfy
    sys.modules["comfy.model_management"] = mm
    sys.modules["comfy.utils"] = utils

    server = types.ModuleType("server")

    class Routes:
        def __init__(self):
            self.routes = []

        def _add(self, method, path):
            def deco(fn):
                self.routes.append((method, path, fn))
                return fn
            return deco

        def get(self, path):
            return self._add("GET", path)

        def post(self, path):
            return self._add("POST", path)

        def put(self, path):
            return self._add("PUT", path)

    class PromptServer:
        instance = None

        def __init__(self):
            self.on_prompt_handlers = []
            self.routes = Routes()
            from aiohttp import web
            self.app = web.Application()   # ComfyUI's app: packs add middlewares while they load
            self.sent = []           # (event, data, sid)
            self.progress_texts = []  # (text, node_id)
            self.client_id = None
            self.last_node_id = None

        def add_on_prompt_handler(self, fn):
            self.on_prompt_handlers.append(fn)

        def send_sync(self, event, data, sid=None):
            self.sent.append((event, data, sid))

        def send_progress_text(self, text, node_id, sid=None):
            self.progress_texts.append((text, node_id))

        def trigger_on_prompt(self, json_data):
            for h in self.on_prompt_handlers:
                try:
                    json_data = h(json_data)
                except Exception:
                    import logging
                    logging.warning("on_prompt handler failed", exc_info=True)
            return json_data
    PromptServer.instance = PromptServer()
    server.PromptServer = PromptServer
    sys.modules["server"] = server

    nodes_mod = types.ModuleType("nodes")
    nodes_mod.NODE_CLASS_MAPPINGS = {}
    sys.modules.setdefault("nodes", nodes_mod)
