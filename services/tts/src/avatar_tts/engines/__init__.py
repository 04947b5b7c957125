"""TTS engines, one module each; heavy libraries are imported only when a model loads."""
