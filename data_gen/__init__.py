"""Stage 1: catalog ingestion and the nine modality embeddings."""
