"""Stage 7: evaluation commands (later issues)."""
