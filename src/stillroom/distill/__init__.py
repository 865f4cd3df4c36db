"""Stillroom distill stage."""
