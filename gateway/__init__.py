"""An OpenAI-compatible LLM gateway and cost router."""

__version__ = "0.1.0"
