"""Poll loops -> bounded channel -> writers -> warehouse -> delete."""
