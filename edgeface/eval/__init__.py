"""Evaluation protocols: VOC AP, WIDER FACE easy/medium/hard, FDDB ROC."""
