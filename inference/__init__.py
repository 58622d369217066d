"""Stage 6: answering requests: constrained decoding, hierarchical matching, retrieval, the bundle, the recommender."""
