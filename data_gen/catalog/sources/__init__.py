"""Catalog sources: adapters that turn a public dataset or a generator into raw catalog records + playlists."""
