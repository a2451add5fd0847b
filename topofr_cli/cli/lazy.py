"""Subcommands that are imported only when they run, so `topofr --help` starts without torch.

The root group lists every command from a name, a "module:attribute" and its one-line help; the
module is imported when the command is resolved (to run it, or to show its own --help). The
attribute is a command function or a `typer.Typer` (a group such as `prepare`).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


class _Placeholder(TyperCommand):
    """What the root's help and shell completion see of a command that has not been imported."""

    def __init__(self, name: str, target: str, short_help: str) -> None:
        super().__init__(name=name, help=short_help, short_help=short_help, callback=None)
        self.target = target

    def load(self) -> Any:
        module_name, attribute = self.target.split(":")
        found = getattr(importlib.import_module(module_name), attribute)
        if isinstance(found, typer.Typer):
            command = typer.main.get_group(found)
        else:
            single = typer.Typer(add_completion=False)
            single.command(self.name)(found)
            command = typer.main.get_command(single)
        command.name = self.name
        return command


class LazyGroup(TyperGroup):
    """A root group whose `lazy_commands` ({name: (target, short help)}) load on first use."""

    lazy_commands: dict[str, tuple[str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, (target, short_help) in self.lazy_commands.items():
            self.commands[name] = _Placeholder(name, target, short_help)

    def load(self, name: str) -> Any:
        """The real command `name` (imports its module once)."""
        command = self.commands.get(name)
        if isinstance(command, _Placeholder):
            command = self.commands[name] = command.load()
        return command

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, _Placeholder):
            command = self.load(command.name)
        return name, command, rest


def lazy_group(commands: dict[str, tuple[str, str]]) -> type[LazyGroup]:
    """A `LazyGroup` class for `typer.Typer(cls=...)` that registers `commands`."""
    return type("TopofrGroup", (LazyGroup,), {"lazy_commands": dict(commands)})
