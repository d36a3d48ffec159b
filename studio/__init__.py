"""Hephaestus Studio: a private AI studio for a homelab GPU server."""
