"""Stage 2: music tokenizers (quantizers/), the token format and database, and the LLM vocabulary extension."""
