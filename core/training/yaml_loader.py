"""The guarded YAML loader (limits on aliases, nodes, depth; errors name the field) and the one YAML dumper."""

from __future__ import annotations

import re
from typing import Any

import yaml

from core.errors import InvalidInput

# YAML parsing limits: a real config is a few hundred nodes; these stop alias bombs, deep nesting and the
# pure-Python parser's seconds on a wall of numbers (PyYAML composes roughly 20k nodes a second here).
MAX_ALIASES = 100


MAX_NODES = 10_000


MAX_DEPTH = 64


class _Refused(Exception):
    """A YAML document over the parser's limits."""


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader with limits on aliases, nesting and expanded size, and ai-toolkit's float reading."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Compose one node, counting aliases, nodes and depth."""
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"uses more than {MAX_ALIASES} aliases")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(f"has more than {MAX_NODES} nodes")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"is nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        """Compose the document and refuse it if aliases would expand it past the node limit."""
        node = super().compose_document()
        if node is not None:
            _check_expanded_size(node)
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expanded_size(root: yaml.Node) -> None:
    """Count nodes as if every alias were copied out (shared subtrees counted once each use)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_NODES:
                raise _Refused(f"expands to more than {MAX_NODES} nodes")
            sizes[key] = size
            on_path.discard(key)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _Refused("contains a recursive alias")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def load_yaml(text: str, *, field: str = "yaml_config") -> Any:
    """Parse YAML or JSON safely, with limits on aliases, nesting and size; errors name the field."""
    try:
        return yaml.load(text, Loader=_GuardedLoader)
    except _Refused as exc:
        raise InvalidInput(field, f"{exc}, which a training config never needs") from None
    except RecursionError:
        raise InvalidInput(field, f"is nested deeper than {MAX_DEPTH} levels") from None
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise InvalidInput(field, f"is not valid YAML or JSON ({exc.problem}{where})") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(field, f"is not valid YAML or JSON ({exc})") from None


# ai-toolkit reads `lr: 1e-4` as a float (YAML 1.1 wants a dot); read it the same way so it is written back as one.
_GuardedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# libyaml's emitter when present: the pure-Python one costs ~10 ms, on the job start path.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_yaml(data: Any) -> str:
    """YAML as lorapod writes it everywhere: keys in order, block style, unicode kept."""
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, default_flow_style=False)
