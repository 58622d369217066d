"""Stage 1a: the catalog format and validation, sources, ingestion, playlists and the train/eval splits."""
