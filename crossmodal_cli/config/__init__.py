"""The configs' entry side: start-up checks (`startup.py`, on the schemas of `schema.py` walked by `check.py`),
the Hydra callbacks (`callback.py`) and the resolvers the YAML files name (`resolvers.py`, registered here)."""
from crossmodal_cli.config import resolvers  # noqa: F401  (registers ${cm_run_dir:}, ${cm_now:}, ...)
