"""The operations console: incidents and post-mortems, secret rotation, platform flags, reports, database
activity, and the sign-in audit."""
