"""Stillroom train stage."""
