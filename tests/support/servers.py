"""Session-scoped real servers for integration tests: PostgreSQL 16 + pgvector, Redis, S3."""
