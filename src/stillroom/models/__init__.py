"""Stillroom models stage."""
