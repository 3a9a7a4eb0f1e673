"""The command line (``python cli.py``): run a saved API-format workflow in the cloud, read, cancel and load
tasks, and a demo with no account. Apart from the core it uses (``..offload``); ComfyUI is not needed."""
