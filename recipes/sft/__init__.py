"""Library of the SFT recipe (recipes/sft_3mtoken.py): options, data, model loading, trainer, fast path, bundle."""
