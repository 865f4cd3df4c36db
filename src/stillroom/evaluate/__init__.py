"""Stillroom evaluate stage."""
