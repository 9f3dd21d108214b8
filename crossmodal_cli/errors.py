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

    exit_status = 2


class Interrupted(CrossmodalError):
    """Ctrl-C (or SIGTERM) outside the training loop, which handles them itself: exit status 130."""

    exit_status = 130


def user_message(err: CrossmodalError) -> str:
    """The one-line message, also when a DataLoader worker re-raised the error with its traceback attached."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Caught CrossmodalError"):
        return lines[-1].split("CrossmodalError: ", 1)[-1]
    return " ".join(lines)


def exit_on_user_error(fn: F) -> F:
    """Run `fn`; a CrossmodalError becomes `error: MESSAGE` on stderr and its exit status (2), without a
    traceback; Ctrl-C becomes one line and exit status 130.

    Set CROSSMODAL_DEBUG=1 to see the traceback instead.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            if os.environ.get("CROSSMODAL_DEBUG"):
                raise
            print("error: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
            sys.exit(130)
        except CrossmodalError as err:
            if os.environ.get("CROSSMODAL_DEBUG"):
                raise
            log.debug("user error", exc_info=True)
            # one write per line: the processes of a torchrun job share the terminal and must not interleave
            sys.stderr.write(f"error: {user_message(err)}\n")
            sys.stderr.flush()
            sys.exit(err.exit_status)

    return wrapper  # type: ignore[return-value]
