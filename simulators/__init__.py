"""Simulators: the devices on the other side of the wire.

Gauges that play a scenario over Modbus TCP, Modbus RTU (on socat pty pairs, with the timing of
a real line) and a text line protocol; a relay board that records every coil write; an audio
sink that records every clip played; fault knobs per device, set at start or at run time (in
process or over a JSON-lines control channel) and counted. They share no code with ``gauged``
or ``drivers`` beyond the wire protocol, so a bug in the daemon cannot hide in a shared helper.
"""

from simulators.clock import SimClock
from simulators.errors import ConfigError, FaultError, ScenarioError, SimulatorError
from simulators.fleet import Fleet
from simulators.scenario import Scenario, load_scenario

__all__ = [
    "ConfigError",
    "FaultError",
    "Fleet",
    "Scenario",
    "ScenarioError",
    "SimClock",
    "SimulatorError",
    "load_scenario",
]
