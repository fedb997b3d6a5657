"""gauged: watches rivers and rain, sounds the alarm."""

from gauged.errors import ConfigError, GaugedError, ScenarioError

__version__ = "0.1.0"
__all__ = ["ConfigError", "GaugedError", "ScenarioError", "__version__"]
