"""Per-modality vectorizers (3MToken Appendix A): one class per modality kind."""
