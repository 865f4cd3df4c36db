"""Stillroom report stage."""
