"""Stand-in for the id-only caption app's package path (tests only)."""
