"""The per-model controller the daemon and the simulator both run (pure: time is an argument)."""
