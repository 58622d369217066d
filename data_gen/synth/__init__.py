"""Stage 3: synthetic training data from an LLM: requests per track (D_qt) and modality relevance per request (D_r)."""
