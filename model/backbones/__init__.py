"""Frozen CNN backbones that return the multi-stage feature maps iMAC pools over."""
