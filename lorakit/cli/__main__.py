"""``python -m lorakit.cli``: the ``lorakit`` command, run as a module.

Introduced in notebooks/06_train_style_lora.ipynb, with ``lorakit train``.

``accelerate launch --multi_gpu --num_processes N -m lorakit.cli train ...`` starts the command
this way in each of N processes (docs/cli.md). The command itself is ``lorakit.cli.main``.

Left out: everything else; this file only runs ``main``.
"""

import sys

from lorakit.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
