"""A disposable fork of a chain (anvil --fork-url at a block): drills and simulations run there, never on the chain
the back office watches."""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from .rpc import ProviderUnavailable, RpcClient, RpcError

START_SECONDS = 30.0


class ForkUnavailable(Exception):
    """The fork could not start: no anvil, or a provider without the state at that block."""


def anvil_path() -> str:
    configured = getattr(settings, "ANVIL_BIN", "") or str(Path(settings.BASE_DIR) / "node_modules" / ".bin" / "anvil")
    if Path(configured).exists():
        return configured
    found = shutil.which("anvil")
    if not found:
        raise ForkUnavailable(f"anvil is not installed ({configured} does not exist and none is on PATH): set "
                              "ANVIL_BIN, or run make install (npm ci installs @foundry-rs/anvil).")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def forked(chain: str, *, rpc_url: str, block: int, block_time: float | None = None) -> Iterator[RpcClient]:
    """An anvil forking `rpc_url` at `block`, mining every `block_time` seconds (None: one block per transaction),
    for the length of the `with`; yields a client of it. ForkUnavailable names why it could not start."""
    port = _free_port()
    args = [anvil_path(), "--host", "127.0.0.1", "--port", str(port), "--fork-url", rpc_url,
            "--fork-block-number", str(block), "--silent", "--no-storage-caching"]
    if block_time:
        args += ["--block-time", f"{block_time:g}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    client = RpcClient(f"{chain}-fork", [("fork", f"http://127.0.0.1:{port}")], timeout=10)
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:
            if proc.poll() is not None:
                error = proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:] if proc.stderr else []
                raise ForkUnavailable(f"anvil could not fork {chain} at block {block}: "
                                      f"{error[0] if error else f'exit {proc.returncode}'} (the provider may not keep "
                                      "the state of that block: use an archive or a full node's recent blocks)")
            try:
                client.block_number()
                break
            except (ProviderUnavailable, RpcError):
                if time.monotonic() > deadline:
                    raise ForkUnavailable(f"anvil did not answer within {START_SECONDS:g} s while forking {chain} "
                                          f"at block {block}") from None
                time.sleep(0.1)
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
