"""Simulators: the devices on the other side of the wire.

Gauges that play a scenario over Modbus TCP, a relay board that records every coil write, and
an audio sink that records every clip played. They share no code with ``gauged`` or
``drivers`` beyond the wire protocol, so a bug in the daemon cannot hide in a shared helper.
"""

from simulators.clock import SimClock
from simulators.errors import ConfigError, ScenarioError, SimulatorError
from simulators.fleet import Fleet
from simulators.scenario import Scenario, load_scenario

__all__ = [
    "ConfigError",
    "Fleet",
    "Scenario",
    "ScenarioError",
    "SimClock",
    "SimulatorError",
    "load_scenario",
]
