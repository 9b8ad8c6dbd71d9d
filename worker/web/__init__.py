"""The HTTP front door: the listener's application (hooks, health, metrics and the dashboard)."""
