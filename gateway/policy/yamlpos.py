"""YAML into plain Python values, remembering the file line of every key path.

PyYAML silently keeps the last of two equal keys; an ops file with a duplicated key is a bug
waiting to ship, so this reader refuses it.
"""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


class YamlProblem(Exception):
    def __init__(self, message: str, line: int | None, path: Path = ()) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.path = path


def parse(text: str) -> tuple[Any, dict[Path, int]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlProblem(f"not valid YAML: {problem}", mark.line + 1 if mark else None) from None
    positions: dict[Path, int] = {}
    if root is None:
        return None, positions
    constructor = yaml.constructor.SafeConstructor()
    return _build(root, (), positions, constructor), positions


def _build(node: yaml.Node, path: Path, positions: dict[Path, int], constructor: Any) -> Any:
    positions[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        constructor.flatten_mapping(node)  # merge keys (<<: *anchor)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                raise YamlProblem("keys must be plain scalars", key_node.start_mark.line + 1, path)
            if key in out:
                raise YamlProblem(f"duplicate key {key!r}", key_node.start_mark.line + 1, path + (key,))
            child = path + (key,)
            out[key] = _build(value_node, child, positions, constructor)
            positions[child] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), positions, constructor) for i, item in enumerate(node.value)]
    return constructor.construct_object(node, deep=True)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def line_of(path: Path, positions: dict[Path, int]) -> int | None:
    for end in range(len(path), -1, -1):
        line = positions.get(tuple(path[:end]))
        if line is not None:
            return line
    return None
