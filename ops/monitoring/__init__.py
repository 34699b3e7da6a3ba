"""Watching the platform: /health and /metrics, the scheduled checks, the beat schedule and its watch, the
worker heartbeat, and the dashboard with its charts."""
