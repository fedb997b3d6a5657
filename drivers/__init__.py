"""Device protocol adapters: a driver knows registers and bytes, never stages.

- `base`: the interface (`Hub`, `Gauge`, `RawReading`);
- `configs`: every driver's configuration model (`BusConfig`, `RegisterSpec`, `LineSpec`,
  `RelayConfig`, `PlayerConfig`, …), importing only pydantic: no pymodbus, no pyserial;
- `registry`: the one table of bus kinds (`BUS_KINDS`, `make_hub`, `make_gauge`);
- `modbus`: Modbus gauges and the Modbus TCP hub; `rtu`: the Modbus RTU hub;
  `line`: serial line text gauges and their hub; `serialport`: what serial hubs share;
- `registers`: register maps and decoding; `pdu`: Modbus PDUs, RTU framing, exception codes;
- `relays`, `players`: the outputs; `errors`: what drivers raise; `backoff`: reconnect pacing.
"""
