"""Tools for the course's maintainers, not concepts of a lesson.

* :mod:`lorakit.maintainer.pretrain`: how the tiny Stable Diffusion in ``data/models/tiny-sd`` was
  made (``python -m lorakit.maintainer.pretrain``; docs/tiny-sd.md tells the runs). Students use
  the committed model and never need to run it.
"""
