"""One `ValueError` that lists every bad row of a file, shared by the MovieLens parser and the importers."""

from __future__ import annotations

_MAX_LISTED_PROBLEMS = 20


def raise_bad_rows(source: str, problems: list[tuple[str, str]], fix: str) -> None:
    """Raise one `ValueError` listing every bad row (`(where, why)` pairs) of `source` and how to fix them."""
    if not problems:
        return
    listed = "; ".join(f"{where}: {why}" for where, why in problems[:_MAX_LISTED_PROBLEMS])
    more = (
        f"; and {len(problems) - _MAX_LISTED_PROBLEMS} more" if len(problems) > _MAX_LISTED_PROBLEMS else ""
    )
    raise ValueError(f"{len(problems)} bad row(s) in {source}: {listed}{more}. {fix}")
