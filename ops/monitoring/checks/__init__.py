"""The scheduled checks (runbook §4, §5 and the alert table): each reads, decides, and raises alerts."""
