"""The class Hydra finds (plugins must live in the `hydra_plugins` namespace): `hydra/sweeper=optuna` in
configs/hydra/sweeper/optuna.yaml. The search itself is crossmodal_cli/search/."""
from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

from crossmodal_cli.errors import exit_on_user_error


class OptunaSweeper(Sweeper):
    """cmtrain -m hparams_search=optuna: crossmodal_cli.search.sweeper.Search on Optuna ≥ 4."""

    def __init__(self, **settings: Any) -> None:  # read again, resolved in the full config, in setup()
        self.search = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from crossmodal_cli.search.sweeper import Search, search_settings

        self.search = exit_on_user_error(
            lambda: Search(search_settings(config.hydra.sweeper), config, hydra_context, task_function))()

    def sweep(self, arguments: list[str]) -> None:
        exit_on_user_error(self.search.run)(arguments)
