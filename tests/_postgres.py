"""A real PostgreSQL server (Debian's binaries, ``initdb`` in a temp dir) for tests and benchmarks.

``PostgreSQL.start()`` runs ``initdb`` and ``postgres`` as a non-root user — root cannot run
PostgreSQL, so when the test runs as root it creates (once) and uses the system user
``satchel-test`` and puts the cluster in a fresh ``/tmp/satchel-pg-*`` directory owned by that
user (pytest's temp dirs are private to root). The server listens on 127.0.0.1 on an ephemeral
port and on a unix socket in the cluster dir, with ``trust`` authentication on loopback only.
``stop()`` ends it by PID: SIGINT (PostgreSQL's "fast" shutdown; SIGTERM would wait for every
client to disconnect), then SIGKILL; the server also gets SIGKILL
when the test process dies (``PR_SET_PDEATHSIG``), so no cluster outlives a test run.

``create_database()`` makes a fresh, empty database and returns its SQLAlchemy URL
(``postgresql://satchel@127.0.0.1:PORT/NAME``).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _procs import die_with_parent, log_tail, stop_process

__all__ = ["TEST_USER", "PostgreSQL", "postgres_bindir"]

TEST_USER = "satchel-test"
"""The system user that runs PostgreSQL when the tests run as root."""

SUPERUSER = "satchel"
"""The database superuser ``initdb`` creates (trust auth: no password)."""


def postgres_bindir() -> Path | None:
    """The folder with ``initdb`` and ``postgres`` (newest Debian version first), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates = [Path(p) for p in found]
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ensure_user() -> pwd.struct_passwd:
    """The unprivileged user that runs PostgreSQL under root (created once with ``useradd``)."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            TEST_USER,
        ],
        check=False,
        capture_output=True,
        timeout=60,
    )
    return pwd.getpwnam(TEST_USER)  # KeyError here: useradd failed (its output is lost)


def _child_setup(uid: int | None, gid: int | None) -> None:
    """In the child before exec: drop root if asked, then die with the test process (Linux)."""
    if gid is not None and uid is not None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    die_with_parent()  # after setuid: a credential change clears the parent-death signal


@dataclass
class PostgreSQL:
    """A running PostgreSQL cluster on ``127.0.0.1:port``."""

    root: Path
    port: int
    bindir: Path
    owned_root: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @classmethod
    def start(
        cls,
        root: Path | None = None,
        *,
        timeout: float = 60.0,
        durable: bool = False,
        max_connections: int = 300,
    ) -> PostgreSQL:
        """``initdb`` + ``postgres`` in ``root`` (a fresh temp dir by default); wait until ready.

        Args:
            durable: keep ``fsync`` on (benchmarks). Tests turn it off: they kill satchel
                replicas, never PostgreSQL, and a crash-safe test cluster only costs time.

        Raises:
            FileNotFoundError: no PostgreSQL binaries.
            RuntimeError: initdb failed, or the server exited or was not ready in ``timeout``.
        """
        bindir = postgres_bindir()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL not found: apt-get install postgresql")
        uid = gid = None
        owned = False
        if os.geteuid() == 0:
            user = _ensure_user()
            uid, gid = user.pw_uid, user.pw_gid
            # pytest's temp dirs are 0700 root: the cluster needs a dir its user can reach.
            root = Path(tempfile.mkdtemp(prefix="satchel-pg-"))
            owned = True
        elif root is None:
            root = Path(tempfile.mkdtemp(prefix="satchel-pg-"))
            owned = True
        root.mkdir(parents=True, exist_ok=True)
        (root / "sock").mkdir(exist_ok=True)
        if uid is not None and gid is not None:
            for path in (root, root / "sock"):
                os.chown(path, uid, gid)
        data = root / "data"
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        env.pop("PGDATA", None)
        init = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=root,
            env=env,
            capture_output=True,
            timeout=120,
            preexec_fn=lambda: _child_setup(uid, gid),
        )
        if init.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({init.returncode}):\n{init.stdout.decode(errors='replace')}"
                f"\n{init.stderr.decode(errors='replace')}"
            )
        port = _free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(root / "sock"),
            "max_connections": str(max_connections),
            "fsync": "on" if durable else "off",
            "synchronous_commit": "on" if durable else "off",
            "full_page_writes": "on" if durable else "off",
            "shared_buffers": "128MB",
            "log_min_messages": "warning",
            "log_min_error_statement": "panic",
        }
        args = [str(bindir / "postgres"), "-D", str(data)]
        for name, value in settings.items():
            args += ["-c", f"{name}={value}"]
        log = open(root / "postgres.log", "wb")  # noqa: SIM115 - the child keeps writing to it
        try:
            proc = subprocess.Popen(
                args,
                cwd=root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=lambda: _child_setup(uid, gid),
            )
        finally:
            log.close()
        server = cls(root=root, port=port, bindir=bindir, owned_root=owned, proc=proc)
        try:
            server._wait_ready(timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        delay = 0.05
        last = "no answer yet"
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode} at startup:\n{self.log_tail()}"
                )
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=5) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last = str(exc).strip()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL not ready after {timeout} s ({last}):\n{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def stop(self, *, grace: float = 10.0) -> None:
        """Stop by PID: SIGINT (fast shutdown), SIGKILL after ``grace`` seconds."""
        proc, self.proc = self.proc, None
        # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for clients to leave.
        stop_process(proc, first=signal.SIGINT, grace=grace)
        if self.owned_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgreSQL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, n_bytes: int = 4000) -> str:
        return log_tail(self.root / "postgres.log", n_bytes)

    # -- client side ----------------------------------------------------------------------------

    def dsn(self, database: str) -> str:
        """A libpq connection string (psycopg) for ``database`` over TCP loopback."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def url(self, database: str) -> str:
        """The URL satchel takes (``--database``) for ``database``."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a fresh random name by default); its URL."""
        import psycopg

        name = name or f"db_{secrets.token_hex(6)}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"bad database name {name!r}")
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
