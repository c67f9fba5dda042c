"""The YAML of lesson files (front matter, ```predict blocks): a SafeLoader without anchors and aliases.

Aliases are how a few lines of YAML become gigabytes (nine levels of anchors, each used ten times,
is a billion values), and the values they make then reach error messages in full. No lesson needs
them, so the loader refuses the first `&name` or `*name` it meets, before anything is expanded.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import Node, ScalarNode

from lessons.loader.report import FieldPath


class AliasRefused(ComposerError):
    """An anchor or alias in lesson YAML; ``path`` is the field it stands at (() for the top)."""

    def __init__(self, path: FieldPath, mark: yaml.Mark) -> None:
        super().__init__(
            problem="anchors and aliases (&name, *name) are not allowed in a lesson: write the value out",
            problem_mark=mark,
        )
        self.path = path


class LessonLoader(yaml.SafeLoader):
    """yaml.SafeLoader that raises AliasRefused at the first anchor or alias, and never expands one."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.field_path: list[str | int] = []

    def compose_node(self, parent: Node | None, index: Any) -> Node:  # type: ignore[override]
        # The composer passes a mapping value's key node, or a sequence item's position, as index.
        part = index.value if isinstance(index, ScalarNode) else index if isinstance(index, int) else None
        if part is not None:
            self.field_path.append(part)
        try:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise AliasRefused(tuple(self.field_path), event.start_mark)
            return super().compose_node(parent, index)  # type: ignore[no-any-return]
        finally:
            if part is not None:
                self.field_path.pop()

    def construct_yaml_int(self, node: ScalarNode) -> int:
        # Python refuses to read an integer of more than 4300 digits (a ValueError, not a YAML error).
        try:
            return super().construct_yaml_int(node)  # type: ignore[no-any-return]
        except ValueError:
            raise ConstructorError(problem="this number is too long", problem_mark=node.start_mark) from None


LessonLoader.add_constructor("tag:yaml.org,2002:int", LessonLoader.construct_yaml_int)


def yaml_load(text: str) -> tuple[Node | None, Any]:
    """(the node tree, for error lines; the data) of one YAML document; raises yaml.YAMLError.

    Raises AliasRefused for an anchor or alias, and RecursionError for very deep nesting.
    """
    loader = LessonLoader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()
