"""The orders example: `app` bills each order exactly once, `produce` makes sample orders."""
