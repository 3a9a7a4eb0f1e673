"""The node layer: thin ComfyUI classes over the core (``..offload``)."""
from .gateway import GPUGeekCloudExecute
from .load_result import GPUGeekLoadResult
from .output import GPUGeekCloudOutput
from .upload import GPUGeekUploadImage

# These ids are a public contract: saved workflows name them.
NODE_CLASS_MAPPINGS = {
    "GPUGeekCloudExecute": GPUGeekCloudExecute,
    "GPUGeekUploadImage": GPUGeekUploadImage,
    "GPUGeekLoadResult": GPUGeekLoadResult,
    # put in the prompt by the queue-time hook for a whole workflow run in the cloud, never by hand
    "GPUGeekCloudOutput": GPUGeekCloudOutput,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "GPUGeekCloudExecute": "GPUGeek Cloud Execute",
    "GPUGeekUploadImage": "GPUGeek Upload Image",
    "GPUGeekLoadResult": "GPUGeek Load Result",
    "GPUGeekCloudOutput": "GPUGeek Cloud Output",
}
