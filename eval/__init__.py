"""Stage 7: evaluation commands (tokenizer quality, content-based and text-to-music retrieval) and ranking metrics."""
