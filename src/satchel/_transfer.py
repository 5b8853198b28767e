"""The transfer engine shared by every backend: cut, hash, negotiate, store; fetch, verify, place.

Upload: files up to one chunk are read and hashed in batches (one "which of these do you
have?" question per batch, one durable flush per put); bigger files stream chunk by chunk on a
thread pool with a bounded number of chunks in flight, so a 10 GiB file never sits in memory.
Download: chunks are fetched in parallel, checked against their BLAKE3 hash, written at their
offsets into a temporary file beside the target and renamed into place, so a local reader
never sees a half-written file either.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from satchel._localfs import LocalItem
from satchel.blobs._local import preallocate
from satchel.core._chunks import CHUNK_SIZE, PACK_CHUNK_MAX, Chunks, hash_bytes, write_at
from satchel.core._types import ChunkRef, FileManifest, NewFile, ResolvedFile
from satchel.errors import PermissionDeniedError, SatchelError, UnavailableError

if TYPE_CHECKING:
    from satchel.backend import Backend

__all__ = ["Progress", "download_files", "upload_items"]

_BATCH_FILES = 512
_BATCH_BYTES = 64 * 1024 * 1024
_WORKERS = max(4, min(16, 2 * (os.cpu_count() or 2)))
"""Chunks in flight per big file on a local store (CPU- and disk-bound: a few per core)."""
_NETWORK_LANES = 16
"""Chunks in flight per big file uploaded over a network (server or S3): enough to cover
round trips and the server's per-chunk fsync (on 2 cores, 16 put 2 GiB ~12 % faster than 4;
downloads stay at :data:`_WORKERS`: more writers into one file only contend for it)."""
_LOCAL_LANES = max(2, min(8, os.cpu_count() or 2))
_POOL_THREADS = max(_WORKERS, _NETWORK_LANES)

_J = TypeVar("_J")
_R = TypeVar("_R")

_seq = itertools.count()
_token = (os.getpid(), uuid.uuid4().hex[:8])

_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """A per-process pool (re-created after fork: threads do not survive it)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(_POOL_THREADS, thread_name_prefix="satchel-io")
            _pool_pid = os.getpid()
        return _pool


class Progress(Protocol):
    def set_total(self, total_bytes: int) -> None: ...

    def advance(self, n_bytes: int) -> None: ...


def _noop(_n: int) -> None:
    return None


def _read_whole(item: LocalItem) -> tuple[bytes, str]:
    """A small file's bytes (all of them, should it have grown since the scan) and hash."""
    fd = os.open(item.abspath, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, item.size + 1)
        more = os.read(fd, CHUNK_SIZE) if data else b""
        if more:
            parts = [data, more]
            while more:
                more = os.read(fd, CHUNK_SIZE)
                parts.append(more)
            data = b"".join(parts)
    finally:
        os.close(fd)
    return data, hash_bytes(data)


_SLOW_READ_S = 200e-6
"""Reading a small file slower than this means cold storage: read on the pool, not inline."""


def _read_batch(
    batch: Sequence[tuple[int, LocalItem]], pool: ThreadPoolExecutor, *, parallel: bool
) -> tuple[list[tuple[bytes, str]], bool]:
    """Read and hash a batch of small files; say whether the next batch should go parallel.

    Files in the page cache read fastest in this thread (12 µs each; a thread pool's hand-offs
    cost ten times that); files that must come from a disk or a network file system overlap
    their waits on the pool. Each batch's pace picks the way for the next one.
    """
    start = time.perf_counter()
    if parallel:
        step = 32
        groups = [batch[i : i + step] for i in range(0, len(batch), step)]
        results = [
            r for part in pool.map(lambda g: [_read_whole(p[1]) for p in g], groups) for r in part
        ]
    else:
        results = [_read_whole(item) for _, item in batch]
    pace = (time.perf_counter() - start) / max(1, len(batch))
    return results, pace > (_SLOW_READ_S / _WORKERS if parallel else _SLOW_READ_S)


def upload_items(
    backend: Backend,
    items: Sequence[LocalItem],
    *,
    progress: Progress | None = None,
    dedup: bool = True,
) -> tuple[list[NewFile], list[ChunkRef]]:
    """Store the chunks of ``items`` through ``backend``; return manifests and written chunks.

    The written chunks are durable when this returns (``backend.flush()``); nothing is
    committed — the caller commits the manifests in one transaction.
    """
    advance: Callable[[int], None] = progress.advance if progress else _noop
    pool = _executor()
    manifests: dict[int, FileManifest] = {}
    written: dict[str, ChunkRef] = {}
    small = [(i, it) for i, it in enumerate(items) if it.size <= CHUNK_SIZE]
    large = [(i, it) for i, it in enumerate(items) if it.size > CHUNK_SIZE]
    local = _local_chunks(backend)

    batch: list[tuple[int, LocalItem]] = []
    batch_bytes = 0
    parallel = False
    for pair in [*small, (-1, None)]:
        if pair[1] is not None:
            batch.append(pair)  # type: ignore[arg-type]
            batch_bytes += pair[1].size
        if batch and (pair[1] is None or len(batch) >= _BATCH_FILES or batch_bytes >= _BATCH_BYTES):
            results, parallel = _read_batch(batch, pool, parallel=parallel)
            hashes = {h for _, h in results}
            have = (hashes - backend.missing_chunks(sorted(hashes))) if dedup else set()
            todo: dict[str, bytes] = {}
            for (idx, _item), (data, digest) in zip(batch, results, strict=True):
                manifests[idx] = FileManifest(
                    size=len(data), chunks=[ChunkRef(digest, len(data))] if data else []
                )
                if data and digest not in have and digest not in written:
                    todo[digest] = data
            if todo and local is not None:
                # Small chunks go into one pack blob; bigger ones are one file each, created
                # on every core (no round trips to batch).
                pending = list(todo.items())
                loose = [p for p in pending if len(p[1]) >= PACK_CHUNK_MAX]
                step = max(16, len(loose) // _WORKERS + 1)
                parts = [loose[i : i + step] for i in range(0, len(loose), step)]
                parts.append([p for p in pending if len(p[1]) < PACK_CHUNK_MAX])
                for _ in pool.map(lambda part: backend.store_chunks(part, sync_each=False), parts):
                    pass
            elif todo:
                backend.store_chunks(list(todo.items()), sync_each=False)
            if todo:
                for digest, data in todo.items():
                    written[digest] = ChunkRef(digest, len(data))
            advance(batch_bytes)
            batch, batch_bytes = [], 0

    for idx, item in large:
        manifests[idx] = _upload_large(backend, item, written, advance, dedup=dedup, pool=pool)

    if written:
        backend.flush()
    files = [NewFile(it.relpath, manifests[i], it.mtime) for i, it in enumerate(items)]
    return files, list(written.values())


def _upload_large(
    backend: Backend,
    item: LocalItem,
    written: dict[str, ChunkRef],
    advance: Callable[[int], None],
    *,
    dedup: bool,
    pool: ThreadPoolExecutor,
) -> FileManifest:
    lock = threading.Lock()
    # Embedded: the kernel copies each chunk from the file into the store, no Python buffer.
    local = _local_chunks(backend)
    copies_nearby = getattr(backend, "copies_nearby", None)
    fd = os.open(item.abspath, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        # A server on this machine that copies the file from our descriptor itself (not one
        # on FUSE or a network file system: its bytes go over TCP, with the network's lanes).
        near = local is None and copies_nearby is not None and copies_nearby(fd)
        near_store = getattr(backend, "store_file_range", None) if near else None
        nearby = local is not None or near

        def skip(digest: str) -> bool:
            with lock:
                if digest in written:
                    return True
            return dedup and not backend.missing_chunks([digest])

        def work_local(offset: int) -> ChunkRef:
            assert local is not None
            chunks, ws = local
            length = min(CHUNK_SIZE, size - offset)
            digest, stored = chunks.store_range(ws, fd, offset, length, skip=skip)
            if stored:
                with lock:
                    written[digest] = ChunkRef(digest, length)
            advance(length)
            return ChunkRef(digest, length)

        def work(offset: int) -> ChunkRef:
            if local is not None:
                return work_local(offset)
            if near_store is not None:
                # A server on this machine copies the range from our descriptor itself.
                length = min(CHUNK_SIZE, size - offset)
                got = near_store(fd, offset, length, dedup=dedup)
                if got is not None:
                    digest, stored = got
                    if stored:
                        with lock:
                            written[digest] = ChunkRef(digest, length)
                    advance(length)
                    return ChunkRef(digest, length)
            data = os.pread(fd, min(CHUNK_SIZE, size - offset), offset)
            digest = hash_bytes(data)
            with lock:
                fresh = digest not in written
            if fresh and (not dedup or backend.missing_chunks([digest])):
                # Durable at the final flush(); the store starts writeback right away.
                backend.store_chunks([(digest, data)], sync_each=False)
                with lock:
                    written[digest] = ChunkRef(digest, len(data))
            advance(len(data))
            return ChunkRef(digest, len(data))

        # A server on this machine copying from our descriptor is CPU-bound like a local
        # store (2 GiB on 2 cores: 1.6-2.0 s with 4 in flight, 1.9-2.6 s with 16).
        lanes = _WORKERS if nearby else _NETWORK_LANES
        refs = _in_lanes(pool, lanes, range(0, size, CHUNK_SIZE), work)
    finally:
        os.close(fd)
    return FileManifest(size=size, chunks=refs)


def download_files(
    backend: Backend,
    files: Sequence[ResolvedFile],
    targets: Sequence[Path],
    *,
    progress: Progress | None = None,
) -> None:
    """Fetch ``files`` into ``targets`` (same order); each target appears complete or not at all."""
    advance = progress.advance if progress else _noop
    pool = _executor()
    small = [(f, t) for f, t in zip(files, targets, strict=True) if len(f.chunks) <= 1]
    large = [(f, t) for f, t in zip(files, targets, strict=True) if len(f.chunks) > 1]

    made: set[Path] = set()

    def fetch_small(pair: tuple[ResolvedFile, Path]) -> None:
        file, target = pair
        data = backend.read_chunk(file.chunks[0]) if file.chunks else b""
        _place(target, file, lambda fd: write_at(fd, data, 0), made=made)
        advance(len(data))

    # Backends that can fetch many chunks per round trip (remote) get small files in groups.
    read_many = getattr(backend, "read_chunks", None)
    if read_many is not None and len(small) > 1:

        def fetch_group(group: Sequence[tuple[ResolvedFile, Path]]) -> None:
            datas = iter(read_many([f.chunks[0] for f, _ in group if f.chunks]))
            for file, target in group:
                data = next(datas) if file.chunks else b""
                _place(target, file, functools.partial(_fill, data), made=made)
                advance(len(data))

        groups = [small[i : i + _BATCH_FILES] for i in range(0, len(small), _BATCH_FILES)]
        # A local store is CPU- and file-system-bound: one lane per core beats many threads
        # fighting over the GIL and the directory locks; a remote one overlaps round trips.
        n_lanes = _LOCAL_LANES if _local_chunks(backend) is not None else _WORKERS

        def run_lane(lane: Sequence[Sequence[tuple[ResolvedFile, Path]]]) -> None:
            for group in lane:
                fetch_group(group)

        for _ in pool.map(run_lane, [groups[i::n_lanes] for i in range(n_lanes)]):
            pass
    else:
        for _ in pool.map(fetch_small, small):
            pass
    for file, target in large:
        _download_large(backend, file, target, pool, advance)


def _local_chunks(backend: Backend) -> tuple[Chunks, int] | None:
    """The in-process chunk store of an embedded backend (kernel-copy downloads), else None."""
    from satchel.backend import EmbeddedBackend

    if isinstance(backend, EmbeddedBackend) and backend.core.chunks.copies_locally:
        return backend.core.chunks, backend.ws
    return None


def _fill(data: bytes, fd: int) -> None:
    write_at(fd, data, 0)


def _in_lanes(
    pool: ThreadPoolExecutor, lanes: int, jobs: Sequence[_J], work: Callable[[_J], _R]
) -> list[_R]:
    """``work`` on every job, ``lanes`` at a time on ``pool``; the results in job order.

    Each lane takes the next job as soon as it finished one, so a slow job (a chunk whose
    store waits on a disk sync) holds up only its own lane; waiting on the oldest job before
    starting another would leave the other lanes idle behind it (a third of a second of idle
    CPU per 2 GiB put through the local port on 2 cores: see bench/RESULTS.md). After a
    failure, or when the caller is interrupted (Ctrl-C), no lane starts another job, and this
    returns or raises only once every lane stopped: they use the caller's descriptor.
    """
    results: list[_R | None] = [None] * len(jobs)
    taken = itertools.count()
    take = threading.Lock()
    stop = threading.Event()

    def lane() -> None:
        while not stop.is_set():
            with take:
                i = next(taken)
            if i >= len(jobs):
                return
            try:
                results[i] = work(jobs[i])
            except BaseException:
                stop.set()
                raise

    futures = [pool.submit(lane) for _ in range(min(lanes, len(jobs)))]
    try:
        wait(futures)
    except BaseException:
        stop.set()
        wait(futures)
        raise
    for future in futures:
        if future.exception() is not None:
            future.result()  # raises the first lane's error
    return results  # type: ignore[return-value]  # every slot filled: no lane failed


def _unique() -> str:
    """A suffix unique per process (random token, renewed after fork) and per call."""
    global _token
    if _token[0] != os.getpid():
        _token = (os.getpid(), uuid.uuid4().hex[:8])
    return f"{_token[1]}{next(_seq)}"


def _place(
    target: Path,
    file: ResolvedFile,
    fill: Callable[[int], None],
    *,
    made: set[Path] | None = None,
) -> None:
    """Write ``target`` through a temporary file and a rename; ``made``: parents known to exist.

    A local file system that refuses (full, read-only, no permission) raises a typed error
    naming ``target``, and leaves no temporary file behind.
    """
    parent = target.parent
    tmp = parent / f".{target.name}.satchel-{_unique()}.part"
    try:
        if made is None or parent not in made:
            parent.mkdir(parents=True, exist_ok=True)
            if made is not None:
                made.add(parent)
        # Read-write: a download verifies chunks where they landed (Chunks.read_into).
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            try:
                fill(fd)
            finally:
                os.close(fd)
            os.utime(tmp, (file.mtime, file.mtime))
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except SatchelError:
        raise
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise PermissionDeniedError(f"cannot write {target}: {exc.strerror}") from exc
        raise UnavailableError(f"cannot write {target}: {exc.strerror}") from exc


def _download_large(
    backend: Backend,
    file: ResolvedFile,
    target: Path,
    pool: ThreadPoolExecutor,
    advance: Callable[[int], None],
) -> None:
    local = _local_chunks(backend)
    prefetch = getattr(backend, "prefetch_chunks", None)
    if local is None and prefetch is not None:
        prefetch(file.chunks)  # remote on S3: every chunk's URL in one request, not one each

    # Remote: each chunk streams into the file, hashed as it lands (Backend.read_chunk_into).
    read_into = getattr(backend, "read_chunk_into", None)
    write_lock = threading.Lock()

    def fill(fd: int) -> None:
        preallocate(fd, file.size)

        def work(args: tuple[int, ChunkRef]) -> None:
            offset, ref = args
            if local is not None:
                chunks, ws = local
                chunks.read_into(ws, ref, fd, offset)
            elif read_into is not None:
                read_into(ref, fd, offset, write_lock)
            else:
                write_at(fd, backend.read_chunk(ref), offset)
            advance(ref.size)

        jobs, offset = [], 0
        for ref in file.chunks:
            jobs.append((offset, ref))
            offset += ref.size
        if offset != file.size:
            raise UnavailableError(
                f"{file.path!r}: chunk sizes add up to {offset}, not {file.size}"
            )
        _in_lanes(pool, _WORKERS, jobs, work)

    _place(target, file, fill)
