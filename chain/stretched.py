"""A local node's blocks spread over a much longer chain, for tests and benchmarks only: the empty stretches of a
year-old marketplace, which anvil cannot mine (anvil_mine slows down with every block: 5,000 take half a minute).

`StretchedChain` answers JSON-RPC as a node whose chain holds the real node's blocks at other numbers: real block
`base + 1 + i` is block `positions[i]`, every block in between is empty (a made-up header with a stable hash), and
the head is `head`. Blocks up to `base` keep their numbers. eth_getLogs is asked of the real node only for the real
blocks its range covers, and each log's blockNumber is rewritten; an empty stretch is answered without asking.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import re
import threading
from typing import Any

import requests

BLOCK_NUMBER = re.compile(rb'"blockNumber"\s*:\s*"0x([0-9a-fA-F]+)"')  # one per log, in the answer's order


class StretchedChain:
    def __init__(self, upstream: str, base: int, positions: list[int], head: int):
        if any(b <= a for a, b in zip([base, *positions], positions, strict=False)) or head < (positions or [base])[-1]:
            raise ValueError("positions must rise above base, and the head must be at or above the last")
        self.upstream, self.base, self.positions, self.head = upstream, base, list(positions), head
        self._real = {v: base + 1 + i for i, v in enumerate(self.positions)}
        self._local = threading.local()

    # ------------------------------------------------------------------ numbers
    def virtual(self, real: int) -> int:
        return real if real <= self.base else self.positions[real - self.base - 1]

    def real_range(self, frm: int, to: int) -> tuple[int, int] | None:
        """The real blocks whose virtual numbers lie in [frm, to], or None."""
        lo = frm if frm <= self.base else self.base + 1 + bisect.bisect_left(self.positions, frm)
        hi = to if to <= self.base else self.base + bisect.bisect_right(self.positions, to)
        return (lo, hi) if lo <= hi else None

    def _number(self, tag: Any) -> int:
        if tag in ("latest", "safe", "finalized", "pending", None):
            return self.head
        return 0 if tag == "earliest" else int(tag, 16)

    # ------------------------------------------------------------------ answers
    def _post(self, payload: Any) -> bytes:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        # One read of the whole answer, not requests' 10 KB reads, each waiting for the interpreter behind the
        # threads rewriting other answers (the same cost chain.rpc avoids): a provider's answers do not slow each
        # other down that way.
        return session.post(self.upstream, data=json.dumps(payload), headers={"Content-Type": "application/json"},
                            timeout=300, stream=True).raw.read(decode_content=True)

    def answer(self, body: Any) -> bytes:
        """The JSON answer to one request (a call or a batch of calls)."""
        if isinstance(body, list):
            return b"[" + b",".join(self.answer(item) for item in body) + b"]"
        method, params = body.get("method"), body.get("params") or []
        if method == "eth_blockNumber":
            return self._result(body, hex(self.head))
        if method == "eth_getBlockByNumber":
            return self._block(body, self._number(params[0]))
        if method == "eth_getLogs":
            return self.get_logs(body)
        return self._post(body)

    def get_logs(self, body: dict) -> bytes:
        query = dict(body["params"][0])
        frm, to = self._number(query.get("fromBlock", "earliest")), self._number(query.get("toBlock"))
        real = self.real_range(frm, min(to, self.head))
        if real is None:
            return self._result(body, [])
        query.update(fromBlock=hex(real[0]), toBlock=hex(real[1]))
        answer = self._post({**body, "params": [query]})
        return BLOCK_NUMBER.sub(lambda m: b'"blockNumber":"%s"' % hex(self.virtual(int(m[1], 16))).encode(), answer)

    def _block(self, body: dict, number: int) -> bytes:
        if number > self.head:
            return self._result(body, None)
        real = number if number <= self.base else self._real.get(number)
        if real is not None:
            answer = json.loads(self._post({**body, "params": [hex(real), *body["params"][1:]]}))
            if answer.get("result"):
                answer["result"]["number"] = hex(number)
            return json.dumps(answer).encode()
        return self._result(body, {"number": hex(number), "hash": self.empty_hash(number),
                                   "parentHash": self.empty_hash(number - 1), "timestamp": hex(number),
                                   "transactions": [], "logsBloom": "0x" + "00" * 256})

    @staticmethod
    def empty_hash(number: int) -> str:
        return "0x" + hashlib.sha256(b"stretched %d" % number).hexdigest()

    @staticmethod
    def _result(body: dict, result: Any) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "result": result}).encode()
