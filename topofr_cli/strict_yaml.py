"""YAML for recipes: safe, strict, and bounded.

PyYAML's safe loader follows YAML 1.1, where `1e-3` is a string (1.1 floats need a dot and a signed
exponent); recipes use YAML 1.2's float syntax so that `--set optim.lr=1e-3` is a number. A key given
twice in one mapping is an error (PyYAML keeps the last one silently), and nesting is bounded because
the composer recurses once per level (5,000 levels end in RecursionError).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_DEPTH = 64

_FLOAT_TAG = "tag:yaml.org,2002:float"
# YAML 1.2 core-schema floats (digits with optional fraction and exponent), plus 1.1's underscores
_FLOAT_12 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
                            |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                            |[-+]?\.(?:inf|Inf|INF)
                            |\.(?:nan|NaN|NAN))$""",
    re.X,
)


# Python refuses to convert integers over 4,300 digits; stop below that with a line-numbered YAML error.
MAX_INT_CHARS = 4000


class _RecipeLoader(yaml.SafeLoader):
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _FLOAT_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def construct_yaml_int(self, node: Any) -> Any:
        # Python refuses to convert over 4,300 digits with a ValueError no YAML caller expects
        if len(str(node.value)) > MAX_INT_CHARS:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"an integer of {len(str(node.value))} characters (at most {MAX_INT_CHARS})",
                node.start_mark,
            )
        return super().construct_yaml_int(node)

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: let the base class report it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


_RecipeLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, list("-+0123456789."))


def load(text: str) -> Any:
    """Parse one YAML document; yaml.YAMLError (see `describe`) for anything wrong."""
    loader = _RecipeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def describe(exc: yaml.YAMLError) -> str:
    """'line N: problem' for a YAML error, on one line."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}: {problem}" if mark is not None else problem


_RecipeLoader.add_constructor("tag:yaml.org,2002:int", _RecipeLoader.construct_yaml_int)
