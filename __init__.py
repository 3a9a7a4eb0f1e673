"""comfyui-gpugeek: run the heavy part of a ComfyUI graph on GPUGeek's cloud, keep the rest local.

ComfyUI imports this folder as a package named after the folder (any name, hyphens included), so every
import inside the pack is relative.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]


def _install():
    import logging

    from .nodes import cloud, comfy, hook, routes
    from .offload.redact import RedactingFilter
    srv = comfy.server()
    if srv is None:
        return
    cloud.data_dir_setup()
    # every handler of the root logger (ComfyUI's console and log file) drops the key wherever it appears
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    hook.install(srv)
    routes.install(srv)


_install()
