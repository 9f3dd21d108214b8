"""Config schemas and the start-up check: every config value is checked before any data is read.

`schema.py` holds one dataclass per config group (the keys, their types and ranges); `check.py` walks a composed
config against them and raises a one-line `CrossmodalError` (`KEY=VALUE: what is wrong, what to write instead`)
for the first wrong value.
"""
