"""Data access: every SQL statement Fleet Monitor runs lives in this package."""
