"""Ports: what the application needs from the outside world, one module per capability.

Every port is a ``typing.Protocol`` so that infrastructure adapters (and the fakes in tests)
satisfy it structurally. Streaming ports are async iterators first; batch calls are conveniences.
"""
