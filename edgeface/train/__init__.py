"""Training: anchor matching, losses, datasets, the trainer and its recipes (needs torch)."""
