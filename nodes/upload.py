"""GPUGeek Upload Image: where local work ends. The image (and optional mask, as alpha) is uploaded once;
the same IMAGE and MASK pass through, and the URL comes out as STRING."""
from __future__ import annotations

import asyncio

from ..offload import codec
from ..offload.transfer import upload_once
from . import cloud


class GPUGeekUploadImage:
    CATEGORY = "GPUGeek"
    DESCRIPTION = ("Uploads an image (and optional mask, as alpha) once, so cloud nodes after it can read it. "
                   "Nodes before it run on this machine.")
    RETURN_TYPES = ("IMAGE", "STRING", "MASK")
    RETURN_NAMES = ("image", "url", "mask")
    OUTPUT_TOOLTIPS = ("The same image, unchanged, for nodes on either side.",
                       "The uploaded image's address (one line per frame of a batch).",
                       "The same mask (a 64x64 empty mask when none was given).")
    FUNCTION = "upload"
    OUTPUT_NODE = True  # so ComfyUI validates and runs it even when only a cloud part reads it

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE", {"tooltip": "The image the cloud part should read."})},
                "optional": {"mask": ("MASK", {"tooltip": "Optional mask, sent as the image's alpha channel "
                                                          "(a cloud LoadImage gives it back as its MASK)."})},
                "hidden": {"gpugeek_skip": "GPUGEEK_SKIP", "gpugeek_target": "GPUGEEK_TARGET", "unique_id": "UNIQUE_ID"}}

    async def upload(self, image, mask=None, gpugeek_skip=False, gpugeek_target="", unique_id=None):
        import torch
        out_mask = mask if mask is not None else torch.zeros((1, 64, 64), dtype=torch.float32)
        if gpugeek_skip:
            return {"ui": {"gpugeek": [{"state": "skipped"}]}, "result": (image, "", out_mask)}
        label = cloud.node_label("GPUGeek Upload Image", unique_id)
        try:
            async with cloud.open_target(override=gpugeek_target) as target:
                urls = []
                for i in range(int(image.shape[0])):
                    m = None
                    if mask is not None:
                        m = mask[min(i, mask.shape[0] - 1)] if mask.ndim == 3 else mask
                    digest = await asyncio.to_thread(codec.tensor_digest, image[i], m)
                    encode = (lambda f=image[i], fm=m: codec.encode_png(f, fm))
                    urls.append(await upload_once(target, cloud.uploads(), encode, f"gpugeek_{digest[:16]}.png", digest))
        except BaseException as e:  # noqa: BLE001 - reraise maps it
            cloud.reraise(e, label)
        text = "\n".join(urls)
        return {"ui": {"gpugeek": [{"state": "uploaded", "count": len(urls)}]}, "result": (image, text, out_mask)}
