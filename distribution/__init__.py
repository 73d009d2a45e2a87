"""The Distribution service: source repos, signed Release Bundles, pushes to edges."""
