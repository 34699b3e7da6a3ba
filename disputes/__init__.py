"""Trust and safety: disputes, blacklist, arbitrator monitoring."""
