"""Finding lesson files: directories to main files, a main file's translations, display names."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

TRANSLATION_NAME = re.compile(r"^(?P<stem>.+)\.(?P<lang>[a-z]{2})\.md$")


def lesson_files(paths: Iterable[Path]) -> list[Path]:
    """Expand directories into their lesson files, sorted, so errors come out in a stable order.

    Translations (NN-id.bg.md) are read with their main file: a translation named on its own
    stands for its main file.
    """
    out: list[Path] = []
    for path in paths:
        for item in sorted(path.glob("*.md")) if path.is_dir() else [path]:
            m = TRANSLATION_NAME.match(item.name)
            if m:
                if path.is_dir():
                    continue
                item = item.with_name(m["stem"] + ".md")
            if item not in out:
                out.append(item)
    return out


def lesson_translations(path: Path) -> dict[str, Path]:
    """Sibling translation files of a main lesson file, by language suffix (any two letters)."""
    out: dict[str, Path] = {}
    for sibling in sorted(path.parent.glob(f"{glob_escape(path.stem)}.*.md")):
        m = TRANSLATION_NAME.match(sibling.name)
        if m and m["stem"] == path.stem:
            out[m["lang"]] = sibling
    return out


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def display_path(path: Path, relative_to: Path | None) -> str:
    """The name errors give a file: relative to relative_to when inside it, else as given."""
    if relative_to is not None:
        try:
            return str(path.resolve().relative_to(relative_to.resolve()))
        except ValueError:
            pass
    return str(path)
