"""User errors reach the terminal as one line, also from inside DataLoader workers."""
from __future__ import annotations

import pytest
import torch

from crossmodal_cli.errors import CrossmodalError, exit_on_user_error


class Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise CrossmodalError("/data/x.png: cannot read image (truncated)")


@exit_on_user_error
def load_in_worker():
    list(torch.utils.data.DataLoader(Broken(), num_workers=1))


def test_an_error_raised_in_a_worker_is_printed_as_its_own_line(capsys, monkeypatch):
    monkeypatch.delenv("CROSSMODAL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stop:
        load_in_worker()
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: /data/x.png: cannot read image (truncated)\n"


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("CROSSMODAL_DEBUG", "1")
    with pytest.raises(CrossmodalError):
        load_in_worker()
