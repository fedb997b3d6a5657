"""The simulators' exception hierarchy (separate from ``gauged``'s on purpose: no shared code)."""


class SimulatorError(Exception):
    """Root of every error the simulators raise on purpose."""


class ConfigError(SimulatorError):
    """The gauged configuration cannot drive the simulators; the message names file and field."""


class ScenarioError(SimulatorError):
    """A scenario CSV is malformed; the message names the file and the line."""


class FaultError(SimulatorError):
    """A fault knob cannot be set: unknown device, unknown knob or a value out of range."""
