"""Datasets in their real formats: SSv2 labels, Something-Else boxes, and the synthetic generator."""
