"""Fixtures more than one test tier uses (product code and bench/ import nothing from here)."""
