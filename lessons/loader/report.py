"""Errors as `file:line: field: reason`, and the report that turns a field path into a file line."""

from __future__ import annotations

from dataclasses import dataclass, field

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from core.engine.spec import format_path

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class LessonError:
    """One error in a lesson file, printed as `file:line: field: reason`."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


@dataclass
class Report:
    """One file's errors: `add` finds a front matter field's line from its path, `at` is given one."""

    file: str
    root: Node | None = None
    offset: int = 1  # lines before the YAML text (the opening '---')
    errors: list[LessonError] = field(default_factory=list)

    def add(self, path: FieldPath, reason: str) -> None:
        self.errors.append(LessonError(self.file, self.line_of(path), format_path(path) or "front matter", reason))

    def at(self, line: int, field_name: str, reason: str) -> None:
        self.errors.append(LessonError(self.file, line, field_name, reason))

    def line_of(self, path: FieldPath) -> int:
        """1-based file line of the field at path, or of its nearest existing parent."""
        node = self.root
        if node is None:
            return 1
        line = node.start_mark.line
        for part in path:
            if isinstance(node, MappingNode):
                for key, value in node.value:
                    if isinstance(key, ScalarNode) and key.value == str(part):
                        line, node = key.start_mark.line, value
                        break
                else:
                    break
            elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line
            else:
                break
        return line + 1 + self.offset
