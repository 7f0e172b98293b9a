"""``kubectl wva``: the kubectl plugin that shows wva's decisions and configuration."""
