"""The HTTP surface: OpenAI's protocol at the edge, thin handlers over the pipeline."""
