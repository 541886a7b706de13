"""A private Dovecot IMAP server for tests: own config in a tmp dir, a
passwd-file user, a free loopback port, maildir storage, no TLS."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if os.path.exists("/usr/sbin/dovecot") else None)

CONFIG = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
default_login_user = {login_user}
default_internal_user = {internal_user}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Dovecot:
    user = "helpdesk@acme.test"
    password = "imap-secret"

    def __init__(self, root: Path | None = None):
        # its own world-traversable dir: Dovecot's auth process runs as the dovecot user
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="tl-dovecot-"))
        os.chmod(self.root, 0o755)
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    def write_config(self) -> Path:
        import grp
        import pwd

        for sub in ("run", "state", "mail", "home"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        login_user = "dovenull" if _exists_user("dovenull") else "nobody"
        internal_user = "dovecot" if _exists_user("dovecot") else "nobody"
        # mail is accessed as an unprivileged user (Dovecot refuses uid 0)
        owner = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        group = owner.pw_gid if os.geteuid() != 0 else grp.getgrnam("nogroup").gr_gid
        for sub in ("mail", "home"):
            os.chown(self.root / sub, owner.pw_uid, group) if os.geteuid() == 0 else None
        (self.root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        conf = self.root / "dovecot.conf"
        conf.write_text(CONFIG.format(root=self.root, port=self.port, uid=owner.pw_uid, gid=group,
                                      login_user=login_user, internal_user=internal_user))
        return conf

    def start(self) -> Dovecot:
        conf = self.write_config()
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited: {self.proc.stdout.read().decode()} {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start: " + self.log())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text() if path.exists() else ""


def _exists_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
