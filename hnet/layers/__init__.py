"""Layers with no knowledge of stages or routing: one layer kind per file."""
