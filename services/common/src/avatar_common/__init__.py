"""Shared plumbing for the AVATAR services: audio I/O, text chunking, packaged model files."""
