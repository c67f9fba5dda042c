"""The lab engine: real servers on loopback, plain asyncio, no Django imports."""
