"""Blobs as files in a local directory: ``<root>/<workspace>/<hh>/<hash>``.

Writes go to a temporary file in ``<root>/tmp`` and are renamed into place, so a blob is either
absent or complete. Durability: blobs written with ``sync=False`` are made durable by the next
:meth:`LocalBlobStore.sync`, and metadata never references a blob before it has returned.

* Small blobs are flushed in batches by one ``syncfs(2)`` (one flush for 20,000 files instead of
  20,000 fsyncs).
* Large blobs start their writeback at once (``sync_file_range(SYNC_FILE_RANGE_WRITE)``), so the
  disk works while the next chunk is copied and hashed, and keep their descriptor open until
  ``sync`` (or until more than a few dozen are pending): then one ``syncfs`` commits them all
  in one journal transaction, and an ``fdatasync`` of each descriptor (cheap by then) reports
  a writeback error on the very file that failed. ``syncfs`` alone would miss it: it reports
  only errors that happen after its own descriptor is opened, and early writeback can fail
  before that. Keeping the descriptor open also keeps the inode, with its error, in memory.
* A failed ``fdatasync`` poisons the store for the rest of the process (like PostgreSQL's
  PANIC on fsync failure): Linux may drop the dirty pages of a failed writeback, so nothing
  written before it may be acknowledged; every later put and :meth:`~LocalBlobStore.sync` fails.
  Syncs run one at a time, so a caller whose blob another sync took waits for that sync's verdict.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import itertools
import mmap
import os
import select
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from satchel.blobs._base import BlobStore, split_key
from satchel.errors import ConflictError, InvalidArgumentError, NotFoundError, UnavailableError

__all__ = ["LocalBlobStore"]

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_syncfs = getattr(_libc, "syncfs", None)
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_SYNC_FILE_RANGE_WRITE = 2

_EARLY_WRITEBACK_BYTES = 1024 * 1024
"""Blobs at least this big are sized with ``fallocate`` before they are written, and when
written with ``sync=False`` start writeback at once (see above)."""
_MAX_PENDING = 32
"""Open descriptors of unsynced large blobs per store; beyond this the oldest are synced."""
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF)


def _copy(src: int, src_offset: int, dst: int, dst_offset: int, length: int) -> int:
    """Copy up to ``length`` bytes between files in the kernel if it can; return the count."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src, dst, length - done, src_offset + done, dst_offset + done)
            if n == 0:
                return done
            done += n
        return done
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in _NO_KERNEL_COPY:
            raise
    while done < length:  # no kernel copy between these files: read and write
        data = os.pread(src, min(length - done, 8 * 1024 * 1024), src_offset + done)
        if not data:
            break
        view = memoryview(data)
        while view:
            n = os.pwrite(dst, view, dst_offset + done)
            view = view[n:]
            done += n
    return done


_IOV_MAX = 1024


def _write_parts(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    """Write ``parts`` in order at ``fd``'s position: ``writev`` of up to 1024 at a time,
    picking up after short writes."""
    views = [memoryview(p) for p in parts if len(p)]
    i = 0
    while i < len(views):
        if len(views) - i == 1:
            written = os.write(fd, views[i])
        else:
            written = os.writev(fd, views[i : i + _IOV_MAX])
        while written and i < len(views):
            if written >= len(views[i]):
                written -= len(views[i])
                i += 1
            else:
                views[i] = views[i][written:]
                written = 0


LOCAL_DISK_FS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "bcachefs", "tmpfs", "ramfs", "overlay"}
)
"""File systems on local disks (or memory): a server on this machine copies their files itself
through its local port; a file anywhere else (FUSE, NFS, SMB, …) has its bytes sent over TCP."""


class _MountTypes:
    """Mount id -> file system type, from ``/proc/self/mountinfo``, read again only after the
    mount table changed.

    Reading the table costs ~0.5 ms (the kernel writes out every mount), once per chunk
    request on the local port. The table is kept open: the kernel flags it (``POLLPRI``) on
    every mount or unmount, and a flagged table is read again before it is trusted, so a
    mount id freed and given to a new mount is never looked up in the old table. The
    descriptor being classified pins its own mount, whose id cannot change hands meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._types: dict[bytes, str] = {}
        self._pid = -1
        self._table = -1  # /proc/self/mountinfo, kept open
        self._poller = select.poll()

    def type_of(self, mount_id: bytes) -> str:
        with self._lock:
            if self._pid != os.getpid():  # (re)open: first use, or a forked child
                self._reopen()
            elif self._poller.poll(0):  # mounted or unmounted since the table was read
                self._types.clear()
            if mount_id not in self._types:
                self._read()
            return self._types.get(mount_id, "")

    def _reopen(self) -> None:
        if self._table >= 0:
            self._poller.unregister(self._table)
            os.close(self._table)
        self._table = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        self._poller.register(self._table, select.POLLPRI | select.POLLERR)
        self._pid = os.getpid()
        self._types.clear()

    def _read(self) -> None:
        os.lseek(self._table, 0, os.SEEK_SET)
        parts = []
        while part := os.read(self._table, 1 << 16):
            parts.append(part)
        types = {}
        for line in b"".join(parts).splitlines():
            # "36 35 98:0 /root /mnt opts [optional fields...] - ext4 /dev/vda rw"
            head, sep, tail = line.partition(b" - ")
            if sep:
                kind = tail.split(b" ", 1)[0].decode("ascii", "replace")
                types[head.split(b" ", 1)[0]] = kind
        self._types = types


_mount_types = _MountTypes()


def file_system(fd: int) -> str:
    """The type of the file system ``fd`` is on (``ext4``, ``fuse``, …), or ``""`` if unknown.

    Read from ``/proc/self/fdinfo`` (the descriptor's mount id) and ``/proc/self/mountinfo``,
    never from the file: ``fstat`` or ``fstatfs`` of a FUSE file asks its daemon, which may
    never answer. A descriptor whose mount is not in this process's mount namespace (a client
    in another container) is unknown.
    """
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as info:
            fields = dict(line.split(b":", 1) for line in info.read().splitlines() if b":" in line)
        return _mount_types.type_of(fields[b"mnt_id"].strip())
    except (OSError, KeyError):
        return ""


def check_mapped(fd: int, start: int, length: int, check: Callable[[memoryview], None]) -> None:
    """Call ``check`` on ``length`` bytes of file ``fd`` from ``start``, mapped read-only."""
    if length == 0:
        check(memoryview(b""))
        return
    begin = start - start % mmap.ALLOCATIONGRANULARITY
    with mmap.mmap(fd, start + length - begin, offset=begin, access=mmap.ACCESS_READ) as m:
        view = memoryview(m)
        try:
            part = view[start - begin :]
            try:
                check(part)
            finally:
                part.release()
        finally:
            view.release()


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now (a hint: durability comes later)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def preallocate(fd: int, length: int) -> None:
    """Size the empty file ``fd`` to ``length`` bytes with its disk space allocated up front.

    Writing a big file into blocks ``fallocate(2)`` reserved skips ext4's per-page delayed
    allocation: copying 2 GiB in 8 MiB files and syncing them took 1.00 s instead of 1.21 s
    here (bench/RESULTS.md). Running out of space fails here, before any byte is copied. A
    file system without ``fallocate`` gets a plain ``ftruncate`` (a sparse file): glibc's
    ``posix_fallocate`` would write zeros instead, doubling the work.
    """
    if _fallocate is not None and length > 0:
        if _fallocate(fd, 0, 0, length) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err))
    os.ftruncate(fd, length)


class LocalBlobStore(BlobStore):
    """A content-addressed store in a local directory, safe for many processes at once."""

    packs_small_chunks = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = self.root.as_uri()
        self._tmp = self.root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._root_s = str(self.root)
        self._tmp_s = str(self._tmp)
        self._made: set[str] = set()
        self._made_lock = threading.Lock()
        self._token = (os.getpid(), uuid.uuid4().hex[:12])
        self._seq = itertools.count()
        self._pending: deque[int] = deque()
        self._pending_pid = os.getpid()
        self._pending_lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._sync_pid = os.getpid()
        self._poisoned: str | None = None

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def _file(self, key: str) -> str:
        """The blob's file (plain strings: this runs once per blob, 20,000 times a put)."""
        workspace, digest = split_key(key)
        return f"{self._root_s}/{workspace}/{digest[:2]}/{digest}"

    def _tmp_file(self, stem: str) -> str:
        """A fresh name in ``tmp/``: unique per process (random token) and per call (counter)."""
        if self._token[0] != os.getpid():
            self._token = (os.getpid(), uuid.uuid4().hex[:12])
        return f"{self._tmp_s}/{stem}.{self._token[1]}.{next(self._seq)}"

    def _ensure_dir(self, directory: str) -> None:
        if directory in self._made:
            return
        os.makedirs(directory, exist_ok=True)
        with self._made_lock:
            self._made.add(directory)

    def put(self, key: str, data: bytes | memoryview, *, sync: bool = True) -> None:
        self.put_parts(key, [data], sync=sync)

    def put_parts(
        self, key: str, parts: Sequence[bytes | memoryview], *, sync: bool = True
    ) -> None:
        """:meth:`put` of the concatenation of ``parts``, written with ``writev`` (no join)."""
        self._check_poisoned()  # after a failed fdatasync nothing more is acknowledged
        final = self._file(key)
        tmp = self._tmp_file(final[-64:])
        size = sum(len(p) for p in parts)
        big = size >= _EARLY_WRITEBACK_BYTES
        defer = not sync and big
        try:
            self._ensure_dir(os.path.dirname(final))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if big:
                    preallocate(fd, size)
                _write_parts(fd, parts)
                if sync:
                    self._fdatasync(fd)
                elif defer:
                    _start_writeback(fd)
                os.replace(tmp, final)
            except BaseException:
                os.close(fd)
                raise
            if not defer:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):  # gone, or the file system is read-only now
                os.unlink(tmp)
            raise UnavailableError(f"cannot write blob {key}: {exc.strerror}") from exc
        if defer:
            self._defer_sync(fd)

    def _fdatasync(self, fd: int) -> None:
        """``fdatasync``; a failure poisons the store (see the module docstring)."""
        try:
            os.fdatasync(fd)
        except OSError as exc:
            self._poisoned = f"fdatasync of a blob failed: {exc.strerror}"
            raise

    def _defer_sync(self, fd: int) -> None:
        """Keep ``fd`` open until :meth:`sync`, or flush all pending beyond :data:`_MAX_PENDING`."""
        with self._pending_lock:
            self._forget_inherited()
            self._pending.append(fd)
            due = []
            if len(self._pending) > _MAX_PENDING:
                due = list(self._pending)
                self._pending.clear()
        if due:
            self._flush(due)

    def _flush(self, fds: list[int]) -> None:
        """``syncfs`` once (one journal commit for everything), then ``fdatasync`` each of
        ``fds``: by then a cheap call, there to report a writeback error of that very file."""
        try:
            self._syncfs()
        finally:
            self._datasync(fds)

    def _forget_inherited(self) -> None:
        """After ``fork()``: the parent's pending descriptors are the parent's to sync."""
        if self._pending_pid != os.getpid():
            for fd in self._pending:
                os.close(fd)
            self._pending.clear()
            self._pending_pid = os.getpid()

    def _datasync(self, fds: list[int]) -> None:
        failed: OSError | None = None
        for fd in fds:
            try:
                os.fdatasync(fd)
            except OSError as exc:
                failed = failed or exc
            finally:
                os.close(fd)
        if failed is not None:
            self._poisoned = f"fdatasync of a blob failed: {failed.strerror}"
        self._check_poisoned()

    def _check_poisoned(self) -> None:
        if self._poisoned is not None:
            raise UnavailableError(
                f"blob store {self.root} cannot acknowledge writes: {self._poisoned}; "
                "check the disk and restart (data written since may not be durable)"
            )

    def copy_into(
        self,
        key: str,
        fd: int,
        offset: int,
        *,
        start: int = 0,
        length: int | None = None,
        check: Callable[[memoryview], None] | None = None,
        guard: contextlib.AbstractContextManager[object] | None = None,
    ) -> int:
        """Copy the blob under ``key`` (``length`` bytes from ``start``; default: all of it)
        into file ``fd`` at ``offset``; return the bytes copied.

        The kernel copies page cache to page cache (``copy_file_range``), without a pass
        through Python. Either the caller verifies what landed in ``fd``, or ``check`` sees
        the blob's range first (mapped, not copied: blobs are never changed in place) and
        raises if it is wrong — for an ``fd`` that is not the caller's to map. The copy runs
        under ``guard`` when given (writers of one file queue on its inode lock anyway).
        """
        with self.open_range(key, start, length) as (src, start, length):
            if check is not None:
                check_mapped(src, start, length, check)
            with guard if guard is not None else contextlib.nullcontext():
                return _copy(src, start, fd, offset, length)

    @contextlib.contextmanager
    def open_range(
        self, key: str, start: int = 0, length: int | None = None
    ) -> Iterator[tuple[int, int, int]]:
        """The blob under ``key`` open for reading, as ``(fd, start, length)`` of the range
        (default: all of it), for a caller that hands the bytes to the kernel (``sendfile``)
        rather than reading them. Closed on exit."""
        try:
            src = os.open(self._file(key), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {key} is missing from {self.root}") from exc
        try:
            size = os.fstat(src).st_size
            if length is None:
                length = size - start
            if start + length > size:
                raise UnavailableError(f"blob {key} is shorter than expected")
            yield src, start, length
        finally:
            os.close(src)

    def put_range(
        self, src: int, offset: int, length: int, name: Callable[[memoryview], str | None]
    ) -> str | None:
        """Store ``length`` bytes of file ``src`` from ``offset`` as a blob named after them.

        The bytes are copied by the kernel into a temporary file first; ``name`` then sees
        them (mapped, not copied) and returns the key to store them under, or ``None`` to drop
        them. Hashing the copy rather than the source means a blob always holds exactly the
        bytes its name was computed from, even if the source file changes meanwhile. Like
        ``put(sync=False)``: durable after the next :meth:`sync`. Returns the key or ``None``.
        """
        if length <= 0:
            raise InvalidArgumentError("put_range needs at least one byte")
        self._check_poisoned()
        tmp = Path(self._tmp_file("range"))
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise UnavailableError(f"cannot create a blob in {self._tmp}: {exc.strerror}") from exc
        key: str | None = None
        try:
            preallocate(fd, length)
            copied = _copy(src, offset, fd, 0, length)
            if copied != length:
                raise ConflictError(
                    f"the file being stored shrank while it was read ({copied} of {length} "
                    f"bytes at offset {offset})"
                )
            with mmap.mmap(fd, length, access=mmap.ACCESS_READ) as mapped:
                view = memoryview(mapped)
                try:
                    key = name(view)
                finally:
                    view.release()
            if key is not None:
                final = self._file(key)
                self._ensure_dir(os.path.dirname(final))
                _start_writeback(fd)
                os.replace(tmp, final)
        except BaseException as exc:
            os.close(fd)
            with contextlib.suppress(OSError):  # gone, or the file system is read-only now
                tmp.unlink()
            if isinstance(exc, OSError):
                raise UnavailableError(f"cannot write a blob: {exc.strerror}") from exc
            raise
        if key is None:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            return None
        self._defer_sync(fd)
        return key

    def get(self, key: str) -> bytes:
        try:
            with open(self._file(key), "rb", buffering=0) as handle:
                return handle.readall()
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {key} is missing from {self.root}") from exc

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {key} is missing from {self.root}") from exc
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            raise UnavailableError(f"blob {key} is shorter than expected")
        return data

    def get_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Several ranges of one blob through one descriptor (a pack's chunks)."""
        try:
            fd = os.open(self._file(key), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {key} is missing from {self.root}") from exc
        try:
            out = [os.pread(fd, length, offset) for offset, length in ranges]
        finally:
            os.close(fd)
        for (offset, length), data in zip(ranges, out, strict=True):
            if len(data) != length:
                raise UnavailableError(
                    f"blob {key} is shorter than expected ({offset + len(data)} < "
                    f"{offset + length})"
                )
        return out

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {key} is missing from {self.root}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_if_older(self, key: str, cutoff: float) -> bool:
        path = self._path(key)
        try:
            if path.stat().st_mtime >= cutoff:
                return False
            path.unlink()
        except FileNotFoundError:
            pass
        return True

    def iter_keys(self) -> Iterator[tuple[str, float]]:
        for ws_dir in self.root.iterdir():
            if not ws_dir.name.isdigit():
                continue
            for sub in ws_dir.iterdir():
                for blob in sub.iterdir():
                    try:
                        mtime = blob.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    yield f"{ws_dir.name}/{blob.name}", mtime

    def sync(self) -> None:
        """Make every blob written so far durable, with its rename.

        Fails on EIO, and for good after a failed ``fdatasync`` (see the module docstring).
        """
        self._check_poisoned()
        if self._sync_pid != os.getpid():  # after fork(): the parent's threads are not here
            self._sync_lock, self._sync_pid = threading.Lock(), os.getpid()
        # One sync at a time: a caller whose blob another sync took (to fdatasync it) waits
        # for that sync, then sees its error (the store is poisoned) instead of answering on
        # an empty flush of its own while the other one is still finding out.
        with self._sync_lock:
            with self._pending_lock:
                self._forget_inherited()
                due = list(self._pending)
                self._pending.clear()
            self._flush(due)

    def _syncfs(self) -> None:
        if _syncfs is None:
            os.sync()
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise UnavailableError(f"syncfs of {self.root} failed: {os.strerror(err)}")
        finally:
            os.close(fd)

    def sweep_temporaries(self, older_than: float) -> int:
        count = 0
        for tmp in self._tmp.iterdir():
            try:
                if tmp.stat().st_mtime < older_than:
                    tmp.unlink()
                    count += 1
            except FileNotFoundError:
                continue
        return count
