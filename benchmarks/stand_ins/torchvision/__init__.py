"""A stand-in for torchvision: the transforms diffusers' ``train_text_to_image_lora.py`` uses.

Not a lesson's concept: ``benchmarks.train_vs_diffusers`` puts ``benchmarks/stand_ins`` first on the
path of diffusers' script when torchvision is not installed (PyPI's torchvision wheels are built
against PyPI's CUDA torch and do not load against the course's CPU build: uninstall one first).
``transforms`` holds the transforms that script calls, with torchvision's semantics for PIL images.

Left out: everything else in torchvision (models, data sets, video, the C++ operators).
"""

__version__ = "0.0+lorakit.stand_in"
