"""Stage 1b: catalog -> nine modality embeddings + presence mask (`run.py`), one vectorizer module per modality kind."""
