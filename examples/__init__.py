"""Example applications built on Onceflow."""
