"""Device protocol adapters: a driver knows registers and bytes, never stages."""
