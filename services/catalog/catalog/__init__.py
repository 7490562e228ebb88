"""Catalog service: every macOS and BSI release Apple ships, from GDMF (and SOFA)."""
