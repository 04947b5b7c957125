"""AVATAR orchestrator: a self-hosted real-time AI voice companion."""

__version__ = "0.1.0"
