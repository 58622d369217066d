"""Training recipes: the 3MTokenRec SFT script (sft_3mtoken.py, library in sft/), the relevance model, YAML configs."""
