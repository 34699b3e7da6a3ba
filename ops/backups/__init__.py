"""Backups of the back office database (`pg_dump -Fc`) and restore tests proving that a backup comes back whole.
`services` is the doorway for writes; `selectors` for the ages the pages and checks show."""
