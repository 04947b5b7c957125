"""OpenAI's Realtime API as an adapter over the conversation pipeline (docs/realtime.md)."""
