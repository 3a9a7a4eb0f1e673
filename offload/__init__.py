"""The pack's core: everything that can run without ComfyUI.

client (GPUGeek's five calls), plan (API prompt -> local prompt + cloud plans), transfer (uploads with
dedup, parallel downloads), codec (tensors <-> image bytes), journal (durable task records), config (key,
base URL, workflow id). Nothing in this package imports ComfyUI; every import inside it is relative.
"""
