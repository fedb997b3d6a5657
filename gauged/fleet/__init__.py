"""The fleet (DESIGN §7): the city view over the central brokers (`gauged fleet`) and the
fleet demo (`gauged fleet-demo`): the central stack of contrib/ and N gateways on loopback.

It sits at the top of the layers with cli and demo: it may use the daemon (a demo gateway
is a daemon), ops (the page style, the command signing) and MQTT directly; nothing of
gauged imports it but the CLI.
"""
