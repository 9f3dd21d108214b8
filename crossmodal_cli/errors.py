"""The package's own exception for mistakes a user can make, and the one place that reports it."""
from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable)


class CrossmodalError(Exception):
    """A user-fixable problem (bad config key, bad CSV, missing file). Its message is one line that says what to do."""


def user_message(err: CrossmodalError) -> str:
    """The one-line message, also when a DataLoader worker re-raised the error with its traceback attached."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught CrossmodalError"):
        return lines[-1].split("CrossmodalError: ", 1)[-1]
    return " ".join(lines)


def exit_on_user_error(fn: F) -> F:
    """Run `fn`; a CrossmodalError becomes `error: MESSAGE` on stderr and exit status 2, without a traceback.

    Set CROSSMODAL_DEBUG=1 to see the traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CrossmodalError as err:
            if os.environ.get("CROSSMODAL_DEBUG"):
                raise
            log.debug("user error", exc_info=True)
            print(f"error: {user_message(err)}", file=sys.stderr, flush=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
