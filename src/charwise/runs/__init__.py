"""A run directory on disk: its files, its lock, checkpoints, the bundled base, transfer."""
