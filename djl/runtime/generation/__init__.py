"""Text generation: Hugging Face causal LMs served with continuous batching."""
