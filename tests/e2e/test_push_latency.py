"""An idle twin pushes new mail to an IMAP IDLE session within 100 ms of the 250.

The mail filer batches only when there is something to batch
(``core.mail.intake``); an idle twin files at once. The bound is generous so
it holds on a loaded CI machine; ``bench/messaging.py`` measures the real
figures. Each case takes the median of a few messages sent one at a time.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable

import aiosmtplib

from tests.imapidle import IdleWatcher
from tests.protocols.smtp.helpers import client_tls
from tests.twins import TwinProcess, twin_cli

SAMPLES = 5
BOUND = 0.100


async def push_latencies(sender: TwinProcess, receiver: TwinProcess) -> list[float]:
    watcher = await IdleWatcher.open(receiver.port("imaps"), receiver.login, receiver.password)
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=sender.port("submission"),
                                   start_tls=True, tls_context=client_tls()) as smtp:
            await smtp.login(sender.login, sender.password)
            got = []
            for i in range(SAMPLES + 1):  # the first warms up the path (pools, caches)
                base = watcher.count
                message = (f"From: <{sender.login}>\r\nTo: <{receiver.login}>\r\n"
                           f"Subject: push {i}\r\n\r\nhello\r\n").encode()
                await smtp.sendmail(sender.login, [receiver.login], message)
                accepted = time.perf_counter()  # the 250 is in
                pushed = await watcher.until(base + 1, timeout=20)
                got.append(pushed - accepted)
                await asyncio.sleep(0.05)  # idle again
            return got[1:]
    finally:
        await watcher.close()


async def test_an_idle_twin_pushes_local_mail_within_100_ms(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    got = await push_latencies(alice, alice)
    assert statistics.median(got) <= BOUND, [round(t * 1000, 1) for t in got]


async def test_an_idle_twin_pushes_mail_from_another_twin_within_100_ms(
        twins: Callable[..., TwinProcess]) -> None:
    alice = twins("alice")
    bob = twins("bob")
    got = await push_latencies(alice, bob)
    assert statistics.median(got) <= BOUND, [round(t * 1000, 1) for t in got]


async def test_twin_send_reaches_an_idle_twin_within_100_ms(
        twins: Callable[..., TwinProcess]) -> None:
    """`twin send` while alice runs goes through alice (not a row her outbox
    worker finds at its next poll: made 30 s here so the old way cannot pass)."""
    alice = twins("alice", sets=["peer.outbox_poll=30"])
    bob = twins("bob")
    watcher = await IdleWatcher.open(bob.port("imaps"), bob.login, bob.password)
    got = []
    try:
        for i in range(SAMPLES + 1):
            base = watcher.count
            await asyncio.to_thread(twin_cli, alice.data, "send", "bob", f"chat {i}")
            queued = time.perf_counter()  # the CLI has exited: the message is durably queued
            pushed = await watcher.until(base + 1, timeout=20)
            got.append(pushed - queued)
    finally:
        await watcher.close()
    assert statistics.median(got[1:]) <= BOUND, [round(t * 1000, 1) for t in got]
    texts = json.loads(twin_cli(bob.data, "inbox", "--json").stdout)
    assert sorted(m["text"] for m in texts) == [f"chat {i}" for i in range(SAMPLES + 1)]
