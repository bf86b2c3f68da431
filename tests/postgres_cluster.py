"""A throw-away PostgreSQL cluster for the tests: initdb + pg_ctl on 127.0.0.1, a free port.

The data directory and the socket live in a fresh temporary folder that is removed on stop.
PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres` system
user that Debian's `postgresql` package creates (run through `runuser`); as any other user it
is that user's. Password authentication over TCP (scram-sha-256) lets the tests try wrong
credentials. `find_binaries()` says why when no cluster can be started, so the tests skip with
that reason (`.ci/install_postgres` installs the package).
"""

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time

USER = "imgcls"
DATABASE = "sweeps"


def find_binaries() -> tuple[str | None, str]:
    """(the folder holding initdb and pg_ctl, or None; why not)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(initdb)), ""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return os.path.dirname(found[-1]), ""
    return None, "PostgreSQL is not installed (initdb not found): run `bash .ci/install_postgres`"


def _version(path: str) -> float:
    try:
        return float(path.split("/")[-3])
    except ValueError:
        return 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A running cluster; `url` is the SQLAlchemy URL of its database for Optuna."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        root = os.geteuid() == 0
        # Under root the cluster's user must reach its folder: /tmp, whatever TMPDIR says.
        self.root = tempfile.mkdtemp(prefix="imgcls-pg-", dir="/tmp" if root else None)
        self.data = os.path.join(self.root, "data")
        self.password = secrets.token_hex(8)
        self.port = None
        self.owner = None
        if root:
            try:
                self.owner = pwd.getpwnam("postgres")
            except KeyError as e:
                raise RuntimeError("running as root, but there is no `postgres` user") from e
            os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
            os.chmod(self.root, 0o700)

    def _run(self, program: str, *args, timeout=120):
        command = [os.path.join(self.bindir, program), *args]
        if self.owner is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd="/")
        if proc.returncode != 0:
            raise RuntimeError(f"{program} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def start(self) -> "Cluster":
        pwfile = os.path.join(self.root, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self.owner is not None:
            os.chown(pwfile, self.owner.pw_uid, self.owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            self.data,
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
        )
        os.remove(pwfile)
        for attempt in range(3):  # another process may take the free port first
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c max_connections=50"
            )
            try:
                self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.log, "-w", "start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError(f"pg_ctl could not start: {self.log_tail()}") from None
        self._run("createdb", "-h", self.root, "-p", str(self.port), "-U", USER, DATABASE)
        return self

    @property
    def log(self) -> str:
        return os.path.join(self.root, "postgres.log")

    def log_tail(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return " | ".join(f.read().splitlines()[-5:])
        except OSError:
            return "no log"

    def url(self, user=USER, password=None, database=DATABASE) -> str:
        password = self.password if password is None else password
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            time.sleep(0.1)
            shutil.rmtree(self.root, ignore_errors=True)
