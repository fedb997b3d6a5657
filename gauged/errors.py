"""The exception hierarchy of gauged (STYLE 11): callers catch by meaning, not by library."""

from __future__ import annotations

from drivers.errors import DriverError, GaugedError

__all__ = ["ConfigError", "DriverError", "GaugedError", "ScenarioError", "StartupError"]


class ConfigError(GaugedError):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ScenarioError(GaugedError):
    """A scenario CSV cannot be read (names file and line)."""


class StartupError(GaugedError):
    """The daemon cannot start (another instance holds the state folder, the status port is
    taken, the state folder cannot be used): one line for the operator, exit 1, no traceback."""
