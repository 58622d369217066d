"""Shared by every stage: command options, stage manifests, row files and the modality registry."""
