"""Several hosts of one engine: the host lists in the settings, their health, and which
host a request goes to (routing, stickiness, cooldown after failures)."""
