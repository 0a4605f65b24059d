"""Group commit: many small writes from many threads share one transaction and one fsync.

A durable commit costs an fsync (milliseconds on real disks), so committing every message alone caps a
node at a few hundred messages per second however many clients it has. Here each write is a closure
queued to one committer thread, which runs everything waiting in one transaction — each closure inside
its own SAVEPOINT, so one failing write (an idempotency conflict, say) does not undo the others — and
commits once. Every caller still returns only after *its* write is durable: the promise "250/202 only
after the commit" is kept, at a fraction of the cost.

Savepoints cost time, so only jobs that may fail on purpose (an idempotency race) ask for one. If any
other job fails, the batch is rolled back and its jobs are run again one by one, each in its own
transaction, so the failure stays with the job that caused it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from ..errors import StoreError
from .engine import Database, is_retryable

T = TypeVar("T")
MAX_BATCH = 512
RETRIES = 5


@dataclass
class _Job:
    fn: Callable[[Session], Any]
    isolate: bool
    future: Future[Any] = field(default_factory=Future)


class _Unisolated(Exception):
    """A job without a savepoint failed: the batch must be undone and replayed job by job."""


class GroupCommitter:
    def __init__(self, db: Database, *, max_batch: int = MAX_BATCH, name: str = "m365relay-commit") -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._started = False
        self._lock = threading.Lock()
        self.batches = 0
        self.jobs = 0

    def submit(self, fn: Callable[[Session], T], *, isolate: bool = False) -> Future[T]:
        """Queue ``fn(session)``; the future resolves once its transaction has committed. ``isolate`` runs it
        in a savepoint, for jobs whose expected failures must not undo their neighbours'."""
        self._ensure_started()
        job = _Job(fn, isolate)
        self._queue.put(job)
        return job.future

    def run(self, fn: Callable[[Session], T], *, isolate: bool = False) -> T:
        """Run ``fn(session)`` in the next group transaction and wait for the commit."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a group-commit job must not wait for another job")
        return self.submit(fn, isolate=isolate).result()

    def close(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _ensure_started(self) -> None:
        with self._lock:
            if not self._started:
                if self._thread.ident is not None:  # closed before: start a fresh thread
                    self._thread = threading.Thread(target=self._loop, name=self._thread.name, daemon=True)
                self._started = True
                self._thread.start()

    def _loop(self) -> None:
        more: _Job | None = None
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(more)
            self._commit(batch)
            # Drop the references now: a job's closure may hold a 35 MB message until the next batch otherwise.
            job = more = None
            batch.clear()

    def _commit(self, batch: list[_Job]) -> None:
        try:
            outcomes = self._with_retries(batch)
        except _Unisolated:
            for job in batch:  # replay one by one: each job's failure stays its own
                self._commit_alone(job)
            return
        except Exception as exc:  # the transaction itself failed: nothing in it is durable
            for job in batch:
                job.future.set_exception(exc)
            return
        self.batches += 1
        self.jobs += len(batch)
        for job, (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def _with_retries(self, batch: list[_Job]) -> list[tuple[bool, Any]]:
        """A deadlock or serialization failure aborts the whole transaction but says nothing about the
        jobs: run them again (PostgreSQL documents exactly this as the remedy)."""
        for attempt in range(RETRIES):
            try:
                return self._transaction(batch)
            except StoreError as exc:
                if attempt == RETRIES - 1 or not is_retryable(exc):
                    raise
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    def _transaction(self, batch: list[_Job]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self.db.write() as session:
            for job in batch:
                if not job.isolate:
                    try:
                        outcomes.append((True, job.fn(session)))
                    except Exception as exc:
                        if is_retryable(exc):
                            raise StoreError("the transaction was aborted by a concurrent one") from exc
                        if len(batch) == 1:
                            raise
                        raise _Unisolated from exc
                    continue
                savepoint = session.begin_nested()
                try:
                    result = job.fn(session)
                    savepoint.commit()
                    outcomes.append((True, result))
                except Exception as exc:  # the job's own failure: undo it alone, keep the batch
                    savepoint.rollback()
                    if is_retryable(exc):  # a deadlock aborts the whole transaction: retry the batch
                        raise StoreError("the transaction was aborted by a concurrent one") from exc
                    outcomes.append((False, exc))
        return outcomes

    def _commit_alone(self, job: _Job) -> None:
        try:
            with self.db.write() as session:
                result = job.fn(session)
        except Exception as exc:
            job.future.set_exception(exc)
            return
        self.batches += 1
        self.jobs += 1
        job.future.set_result(result)
