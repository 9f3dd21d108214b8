"""KEY=VALUE command-line arguments (the form of cmtrain's overrides) for the commands that compose no config:
cmexport and cmserve."""
from __future__ import annotations

from crossmodal_cli.errors import CrossmodalError


def arguments(argv: list[str], known: dict[str, str | None], usage: str) -> dict[str, str]:
    """argv's KEY=VALUE -> {key: value} over `known` (its defaults; None: required). An unknown or missing key is
    one line."""
    values = dict(known)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in known:
            raise CrossmodalError(f"{arg}: not an argument of this command ({', '.join(f'{k}=' for k in known)})")
        values[key] = value
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise CrossmodalError(f"{' and '.join(f'{k}=' for k in missing)} missing; {usage}")
    return values
