"""Application layer: ports (typing.Protocol), the per-session pipeline and use cases."""
