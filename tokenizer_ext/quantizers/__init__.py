"""Quantizers: embeddings of one modality (or all) -> codes: RQ-VAE, VQ-VAE, K-means, PSRQ, FusID, MusicRec."""
