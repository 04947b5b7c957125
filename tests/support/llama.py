"""Session-scoped llama.cpp OpenAI-compatible server with the packaged SmolLM2 model."""
