"""Operations console: audit log, health, metrics, scheduled checks."""
