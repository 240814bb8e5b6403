"""Settings: the options of each command and of a training run, and config files."""
