"""Config schemas and the start-up check: every config value is checked before any data is read.

`schema.py` holds one dataclass per config group (the keys, their types and ranges); `check.py` walks a composed
config against them and raises a one-line `CrossmodalError` (`KEY=VALUE: what is wrong, what to write instead`)
for the first wrong value.
"""
from crossmodal_cli.config import search  # noqa: E402,F401  (registers ${cm_sweep_direction:} for hparams_search/)
