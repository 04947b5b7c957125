"""Root pytest configuration: shared fixtures for real servers, real speech and fakes.

Servers (PostgreSQL+pgvector, Redis, an S3 server, the llama.cpp server) are started once per
run on free loopback ports and stopped by PID at the end (see tests/support/).
"""

pytest_plugins = [
    "tests.support.audio",
    "tests.support.servers",
    "tests.support.llama",
]
