"""Bench server programs started as child processes."""
