"""A real TFChain node for tests: the spec-144 runtime under chopsticks, offline.

``fixtures/runtime/tfchain_local.json.xz`` is the raw chain spec (see its
README); chopsticks (npm ``@acala-network/chopsticks``, installed by .ci/run)
runs it on 127.0.0.1 with one block per extrinsic and real signature checks.
No ``db`` is given, so every start is a fresh chain held in memory (a restart
on an old db would change the genesis hash and every new extrinsic would be
refused as ``badProof``).

``pause()``/``resume()`` stop the node with SIGSTOP: it keeps accepting TCP
connections (the kernel does that) but never answers, as a hung node would.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import signal
import socket
import subprocess
import time
from functools import cache
from pathlib import Path
from typing import Any

from tests.tools import require_tool

RUNTIME = Path(__file__).resolve().parent / "fixtures" / "runtime" / "tfchain_local.json.xz"
TFT = 10**7


@cache
def _genesis(workdir: str) -> Path:
    path = Path(workdir) / "tfchain_local.json"
    path.write_bytes(lzma.decompress(RUNTIME.read_bytes()))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Chopsticks:
    def __init__(self, workdir: Path) -> None:
        self.binary = require_tool("chopsticks")
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "chopsticks.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> Chopsticks:
        genesis = _genesis(str(self.workdir))
        config = self.workdir / "chopsticks.yml"
        config.write_text(f"genesis: {genesis}\nport: {self.port}\nhost: 127.0.0.1\n"
                          "build-block-mode: Instant\nmock-signature-host: false\n")
        offset = self.log.stat().st_size if self.log.exists() else 0
        out = open(self.log, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen([self.binary, "--config", str(config)], stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chopsticks exited: {self.log.read_text()[-2000:]}")
            if b"RPC listening" in self.log.read_bytes()[offset:]:
                return self
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"chopsticks did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> Chopsticks:
        """Stop and start again on the same port (a fresh chain: no db is kept)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    # -- accounts

    def fund(self, address: str, tft: float = 10.0) -> dict[str, Any]:
        """Send TFT from //Alice (1,000,000 TFT at genesis) with transfer_keep_alive."""
        from substrateinterface import Keypair, SubstrateInterface

        chain = SubstrateInterface(url=self.url, ss58_format=42)
        try:
            call = chain.compose_call("Balances", "transfer_keep_alive",
                                      {"dest": address, "value": int(tft * TFT)})
            ext = chain.create_signed_extrinsic(call=call,
                                                keypair=Keypair.create_from_uri("//Alice"))
            receipt = chain.submit_extrinsic(ext, wait_for_inclusion=True)
            if not receipt.is_success:
                raise RuntimeError(f"funding {address} failed: {receipt.error_message}")
            return {"fee": receipt.total_fee_amount}
        finally:
            chain.close()

    def free(self, address: str) -> int:
        """The account's free balance in units of 1e-7 TFT (0 for an unknown account)."""
        from substrateinterface import SubstrateInterface

        chain = SubstrateInterface(url=self.url, ss58_format=42)
        try:
            return int(chain.query("System", "Account", [address]).value["data"]["free"])
        finally:
            chain.close()
