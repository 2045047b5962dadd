"""genrec: build, fine-tune and serve generative LLM recommenders."""

__version__ = "0.1.0"
