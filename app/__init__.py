"""Agent Bridge: an OpenAI-compatible HTTP proxy for Azure agents."""

__version__ = "0.1.0"
