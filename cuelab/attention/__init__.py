"""Attention analysis: where the position that predicts the answer looks in the video, layer by layer."""
