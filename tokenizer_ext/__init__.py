"""Stage 2 and 5: per-modality music tokenizers and vocabulary extension (later issues)."""
