"""iclab: in-context learning lab."""
