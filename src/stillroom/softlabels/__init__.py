"""Stillroom softlabels stage."""
