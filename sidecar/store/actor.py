"""The store actor: the only writer of the SQLite database.

It takes the first queued write with ``receive()`` and everything else already queued with
``receive_nowait()`` (a checkpoint per message costs ~17x more), applies the whole batch in
one transaction in a worker thread (group commit), then answers each request. Reads go to
a small pool of read-only connections and never wait behind a commit (WAL).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import outcome
import trio

from .. import threads
from ..errors import ShuttingDown, StoreUnavailable
from ..metrics import Metrics
from ..reply import Reply
from . import db as dbmod
from .db import Database
from .ops import WriteOp

__all__ = ["StoreActor", "StoreClient"]

log = logging.getLogger("sidecar.store")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Write:
    """One write request with its private reply channel (buffer 1)."""

    op: WriteOp
    reply: Reply[Any]


class _Slot:
    """A connection plus the lock that keeps one call in flight on it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.lock = trio.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self.lock:
            # Never abandon: the thread still owns the connection until the call returns.
            return await threads.run_sync(fn, self.conn, *args)


class StoreClient:
    """The handle other actors use to reach the store actor and its readers."""

    def __init__(self, send: trio.MemorySendChannel[Write], readers: list[_Slot]) -> None:
        self._send = send
        self._readers = readers
        self._free = list(readers)
        self._reader_sem = trio.Semaphore(len(readers))
        self.closed = False

    async def write(self, op: WriteOp) -> Any:
        """Queue a write and wait until its batch is committed.

        Raises:
            StoreUnavailable: the batch could not be committed (nothing was written).
            ShuttingDown: the store no longer accepts writes.
        """
        reply: Reply[Any] = Reply()
        try:
            # send_nowait first: `send` is a schedule point even when there is room, and
            # waiting for the reply below is one anyway (cancellation is honoured there).
            try:
                self._send.send_nowait(Write(op, reply))
            except trio.WouldBlock:
                await self._send.send(Write(op, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ShuttingDown("the store is closed") from None
        return await reply.receive()

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a pooled read connection in a worker thread."""
        if self.closed:
            raise ShuttingDown("the store is closed")
        async with self._reader_sem:
            slot = self._free.pop()
            try:
                return await slot.run(fn, *args)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"store cannot read: {exc}") from exc
            finally:
                self._free.append(slot)

    def close(self) -> None:
        """Stop writing: once every queued write is committed the store actor closes the DB."""
        self._send.close()


class StoreActor:
    """Owns the write connection; serializes and group-commits every write.

    Args:
        database: an opened, migrated database (``db.open_database``).
        group_commit: batch every write queued at once into one transaction; ``False``
            commits each write alone (the benchmark's baseline).
        max_batch: most writes in one transaction.
        inbox_size: bound of the request channel (back-pressure on producers).
        readers: read-only connections for a file DB (an in-memory DB shares the writer).
        fault_hook: called in the writer thread before each commit; raising there simulates
            a failing disk (tests and the fault harness use it).
    """

    def __init__(
        self,
        database: Database,
        *,
        metrics: Metrics,
        group_commit: bool = True,
        max_batch: int = 1000,
        inbox_size: int = 1024,
        readers: int = 2,
        fault_hook: Callable[[], None] | None = None,
    ) -> None:
        self._db = database
        self._metrics = metrics
        self._max_batch = max_batch if group_commit else 1
        self._inbox_size = inbox_size
        self._n_readers = readers
        self._fault_hook = fault_hook
        self.last_error: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[StoreClient] = trio.TASK_STATUS_IGNORED):
        writer = _Slot(self._db.conn)
        readers: list[_Slot] = []
        send, inbox = trio.open_memory_channel[Write](self._inbox_size)
        try:
            if self._db.path is None:
                readers = [writer]
            else:
                path = self._db.path
                for _ in range(self._n_readers):
                    readers.append(_Slot(await threads.run_sync(dbmod.connect_reader, path)))
            client = StoreClient(send, readers)
            task_status.started(client)
            # Shielded: the store outlives every writer. It stops only when all of them
            # have closed their send ends, after committing what they queued.
            with inbox, trio.CancelScope(shield=True):
                await self._serve(inbox, writer)
            client.closed = True
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                for slot in readers:
                    if slot is not writer:
                        await slot.run(sqlite3.Connection.close)
                await writer.run(lambda _conn: self._db.close())

    async def _serve(self, inbox: trio.MemoryReceiveChannel[Write], writer: _Slot) -> None:
        while True:
            try:
                batch = [await inbox.receive()]
            except trio.EndOfChannel:
                return
            while len(batch) < self._max_batch:
                try:
                    batch.append(inbox.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            results = await writer.run(self._commit, [w.op for w in batch])
            for w, res in zip(batch, results, strict=True):
                w.reply.send_nowait(res)  # a caller that has gone is ignored

    def _commit(self, conn: sqlite3.Connection, ops: list[WriteOp]) -> list[outcome.Outcome[Any]]:
        """Runs in the writer thread: one transaction, or each op alone if the batch fails."""
        started = time.perf_counter()
        try:
            if self._fault_hook is not None:
                self._fault_hook()
            values = self._db.commit_batch(ops)
        except Exception as exc:
            if len(ops) > 1:
                # Isolate: one bad op must not fail the writes batched with it by chance.
                return [self._commit(conn, [op])[0] for op in ops]
            self._metrics.store_errors.inc()
            self.last_error = str(exc)
            log.warning("store write failed: %s", exc)
            if isinstance(exc, sqlite3.Error):
                return [outcome.Error(StoreUnavailable(f"store cannot write: {exc}"))]
            return [outcome.Error(exc)]
        self.last_error = None
        self._metrics.batch_size.observe(len(ops))
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        return [outcome.Value(v) for v in values]
