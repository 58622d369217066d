"""Data stages: the catalog (catalog/), the nine modality embeddings (vectorize/), synthetic D_qt and D_r (synth/)."""
