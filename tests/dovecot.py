"""A real Dovecot (IMAP + POP3) for the tests, one private instance per ``DovecotServer``.

Everything lives in a temporary directory: the configuration, a CA and a server certificate
made at start (so tests can verify TLS against ``ca_file``), passwd-files of test users with
plain passwords, the maildirs, Dovecot's sockets and its log. It listens on 127.0.0.1 only, on
four free ports (imap, imaps, pop3, pop3s).

Which system users its processes run as is decided in ``_identity_settings`` (as root: login
as ``dovenull``, mail as ``dovecot``, the rest as root; otherwise all as the current user).

Helpers: users (``add_user``), mail (``append``, ``list_folder``, ``uids``, ``folders``,
``set_flags``), disturbances (``change_uidvalidity``, ``kick``, ``restart``), account settings
for the fetch stage (``account``), and ``CuttingProxy`` to drop a connection mid-response.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import ipaddress
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from imapclient import IMAPClient

from connector.config import AccountConfig

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
HOST = "127.0.0.1"

# Dovecot 2.3's built-in post-login capability list. ``imap_capability`` replaces the whole
# list, so a server "without MOVE" is this list minus the dropped names.
DEFAULT_IMAP_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    "STATUS=SIZE SAVEDATE LITERAL+ NOTIFY"
).split()


@dataclass(frozen=True)
class MailUser:
    """A test mailbox user (login name and plain password)."""

    name: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class StoredMessage:
    """A message as the server holds it, read without touching its flags."""

    uid: int
    flags: frozenset[str]
    size: int
    raw: bytes = field(repr=False)


@dataclass(frozen=True)
class TestPki:
    """PEM files of a throw-away CA and a server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_test_pki(directory: Path, *, common_name: str = "postmaster-bridge test CA") -> TestPki:
    """Write a CA and a server certificate for ``localhost`` / ``127.0.0.1`` into ``directory``.

    EC P-256 keys because they are made in microseconds; extensions as a strict verifier
    (X509_STRICT) wants them, so the same files keep working with newer Pythons.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = TestPki(
        ca_file=directory / "ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server.key",
    )
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(_pem_key(server_key))
    pki.key_file.chmod(0o600)
    return pki


def _identity_settings() -> str:
    """Which system users Dovecot's processes run as.

    As root (CI, containers): Dovecot refuses root for its login processes (they keep the
    packaged ``dovenull``) and for mail access ("Mail access not allowed for root"), so mail is
    owned by the packaged ``dovecot`` user; the internal services run as root, which keeps the
    test process able to read everything. As an ordinary user: everything runs as that user.
    """
    if os.geteuid() == 0:
        mail_user = pwd.getpwnam("dovecot")
        return (
            "default_internal_user = root\n"
            "default_internal_group = root\n"
            f"mail_uid = {mail_user.pw_uid}\n"
            f"mail_gid = {mail_user.pw_gid}\n"
            "first_valid_uid = 1\n"
            "first_valid_gid = 1\n"
        )
    me = pwd.getpwuid(os.geteuid())
    group = grp.getgrgid(os.getegid()).gr_name
    return (
        f"default_internal_user = {me.pw_name}\n"
        f"default_internal_group = {group}\n"
        f"default_login_user = {me.pw_name}\n"
        f"mail_uid = {me.pw_uid}\n"
        f"mail_gid = {os.getegid()}\n"
        "first_valid_uid = 1\n"
        "first_valid_gid = 1\n"
    )


def _config_text(
    root: Path,
    pki: TestPki,
    ports: dict[str, int],
    imap_capabilities: list[str] | None,
    oauth2_conf: Path | None = None,
    separator: str | None = None,
) -> str:
    capability_line = (
        f"imap_capability = {' '.join(imap_capabilities)}\n" if imap_capabilities else ""
    )
    # With an OAuth2 server: SASL XOAUTH2/OAUTHBEARER go to the oauth2 passdb (tokens checked
    # by RFC 7662 introspection), PLAIN/LOGIN stay with the passwd-files.
    mechanisms = "plain login" + (" xoauth2 oauthbearer" if oauth2_conf else "")
    oauth2_passdb = f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {oauth2_conf}
}}
""" if oauth2_conf else ""
    password_mechanisms = "  mechanisms = plain login" if oauth2_conf else ""
    # Gmail's hierarchy separator is "/" ("[Gmail]/All Mail"); Dovecot's maildir default "."
    namespace = (f"namespace inbox {{\n  inbox = yes\n  separator = {separator}\n}}\n"
                 if separator else "")
    identity = _identity_settings()
    return f"""\
# Written by tests/dovecot.py for one test session.
base_dir = {root}/run
state_dir = {root}/state
instance_name = test-{root.name}
log_path = {root}/dovecot.log
protocols = imap pop3
listen = {HOST}
{identity}# Failed logins answer without the 2 s delay (auth still flushes failures every 0.5 s) and
# collect no brute-force penalty (anvil's penalty socket is closed to everyone), so
# wrong-password tests neither wait long nor slow down later logins from 127.0.0.1.
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
ssl = yes
ssl_cert = <{pki.cert_file}
ssl_key = <{pki.key_file}
ssl_min_protocol = TLSv1.2
passdb {{
  driver = passwd-file
{password_mechanisms}
  # One file per user: Dovecot notices a changed passwd-file by mtime (seconds) and size, so
  # two users added in the same second to one file could stay invisible; a new file cannot.
  args = scheme=PLAIN username_format=%u {root}/users/%u.passwd
}}
{oauth2_passdb}userdb {{
  driver = static
  args = home={root}/home/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
pop3_uidl_format = %08Xu%08Xv
{capability_line}{namespace}service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {ports["imap"]}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {ports["imaps"]}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {HOST}
    port = {ports["pop3"]}
  }}
  inet_listener pop3s {{
    address = {HOST}
    port = {ports["pop3s"]}
    ssl = yes
  }}
}}
"""


class DovecotServer:
    """One private Dovecot process. Use as a context manager, or ``start()`` / ``stop()``.

    ``drop_imap_capabilities`` removes names from the advertised post-login capabilities
    (e.g. ``("MOVE",)``) so clients take their fallback paths; Dovecot still understands the
    commands, clients just must not use them. ``extra_config`` is appended to the generated
    configuration (Dovecot merges a second ``service x { }`` block into the first), e.g. the
    process and client limits of the many-accounts benchmark.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        drop_imap_capabilities: Iterable[str] = (),
        oauth2_introspection_url: str | None = None,
        separator: str | None = None,
        extra_config: str = "",
    ) -> None:
        self._own_root = root is None
        self.extra_config = extra_config
        self.root = Path(tempfile.mkdtemp(prefix="dovecot-")) if root is None else root
        dropped = {name.upper() for name in drop_imap_capabilities}
        self.imap_capabilities = [c for c in DEFAULT_IMAP_CAPABILITIES if c not in dropped]
        self._custom_capabilities = bool(dropped)
        self.oauth2_introspection_url = oauth2_introspection_url
        self.separator = separator
        self.host = HOST
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.pop3_port = free_port()
        self.pop3s_port = free_port()
        self.config_file = self.root / "dovecot.conf"
        self.log_file = self.root / "dovecot.log"
        self.users_dir = self.root / "users"
        self.pki: TestPki | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ca_file(self) -> str:
        assert self.pki is not None, "server not started"
        return str(self.pki.ca_file)

    @property
    def ports(self) -> dict[str, int]:
        return {
            "imap": self.imap_port,
            "imaps": self.imaps_port,
            "pop3": self.pop3_port,
            "pop3s": self.pop3s_port,
        }

    def start(self, timeout: float = 10.0) -> None:
        if self.pki is None:
            self.pki = write_test_pki(self.root / "pki")
            for sub in ("run", "state", "home", "users"):
                (self.root / sub).mkdir(exist_ok=True)
            # mkdtemp makes a 0700 directory; the mail processes (not root) must reach home/.
            self.root.chmod(0o755)
            if os.geteuid() == 0:
                mail_user = pwd.getpwnam("dovecot")
                os.chown(self.root / "home", mail_user.pw_uid, mail_user.pw_gid)
            oauth2_conf = None
            if self.oauth2_introspection_url:
                # Dovecot's oauth2 passdb (doc.dovecot.org, 2.3 "Open Authentication v2.0
                # database"): POST token=... to the introspection endpoint, the token's
                # user is its "username", and "active" must be true.
                oauth2_conf = self.root / "dovecot-oauth2.conf.ext"
                oauth2_conf.write_text(
                    "introspection_mode = post\n"
                    f"introspection_url = {self.oauth2_introspection_url}\n"
                    "force_introspection = yes\n"
                    "username_attribute = username\n"
                    "active_attribute = active\n"
                    "active_value = true\n")
            self.config_file.write_text(
                _config_text(
                    self.root,
                    self.pki,
                    self.ports,
                    self.imap_capabilities if self._custom_capabilities else None,
                    oauth2_conf,
                    self.separator,
                )
                + self.extra_config
            )
        # A master.pid left by a killed run makes Dovecot think it is still running.
        (self.root / "run" / "master.pid").unlink(missing_ok=True)
        with open(self.root / "stdout.log", "ab") as out:
            self._process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        waiting = set(self.ports.values())
        while waiting:
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot exited at start:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"dovecot did not listen in {timeout}s:\n{self.log_text()}")
            for port in list(waiting):
                with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
                    waiting.discard(port)
            if waiting:
                time.sleep(0.02)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop Dovecot: SIGTERM to the master, which ends its children (about 1 s); if it has
        not gone after ``timeout`` (a SIGTERM in the first instants after start is lost), kill
        it. Either way, kill what is left of its process group: mail processes serving a
        client can outlive the master, and a test that restarts the server expects their
        connections to drop."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        self._kill_group(process)

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            self._kill_group(process)

    @staticmethod
    def _kill_group(process: subprocess.Popen[bytes]) -> None:
        # The master runs in its own session (start_new_session), so its process group holds
        # only Dovecot's own processes, and the group id stays taken while any of them lives.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)

    def restart(self) -> None:
        """Stop and start again on the same ports: every open connection is dropped."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.kill()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    def log_text(self) -> str:
        parts = []
        for name in ("dovecot.log", "stdout.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    # -- users -----------------------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str | None = None) -> MailUser:
        """Add a user (a passwd-file of its own) with a random name and password by default."""
        user = MailUser(
            name=name or f"user{secrets.token_hex(4)}",
            password=password or secrets.token_urlsafe(12),
        )
        if not user.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError("test user names are letters, digits, '-' and '_'")
        if ":" in user.password or "\n" in user.password:
            raise ValueError("':' and newlines cannot appear in a passwd-file password")
        path = self.users_dir / f"{user.name}.passwd"
        # Write-and-rename so Dovecot never reads half a file.
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{user.name}:{{PLAIN}}{user.password}::::::\n")
        os.replace(tmp, path)
        return user

    def account(
        self,
        user: MailUser,
        protocol: str = "imap",
        security: str = "none",
        **overrides: object,
    ) -> AccountConfig:
        """Settings to reach ``user``'s mailbox here; the port follows protocol and security
        (``tls`` uses imaps/pop3s, ``starttls`` and ``none`` the plain port) and TLS is
        verified against this server's CA unless overridden."""
        implicit_tls = security == "tls"
        port = {
            ("imap", False): self.imap_port,
            ("imap", True): self.imaps_port,
            ("pop3", False): self.pop3_port,
            ("pop3", True): self.pop3s_port,
        }[(protocol, implicit_tls)]
        # The product's own account config; tests fetch without a size limit by default.
        values: dict[str, object] = {
            "name": f"test-{protocol}-{user.name}", "protocol": protocol, "host": self.host,
            "port": port, "security": security, "username": user.name,
            "password": user.password, "ca_file": self.ca_file, "max_size": 0,
            "timeout": 10.0}
        unknown = set(overrides) - {f.name for f in fields(AccountConfig)}
        if unknown:
            raise TypeError(f"unknown account setting {sorted(unknown)[0]}")
        values.update(overrides)
        return AccountConfig(**values)  # type: ignore[arg-type]

    # -- mailbox contents (through IMAP, as the user) --------------------------------------

    @contextlib.contextmanager
    def session(self, user: MailUser) -> Iterator[IMAPClient]:
        """A logged-in IMAPClient over plain IMAP, for setting up and inspecting mailboxes."""
        client = IMAPClient(self.host, self.imap_port, ssl=False, timeout=10)
        try:
            client.login(user.name, user.password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(
        self,
        user: MailUser,
        raws: bytes | Iterable[bytes],
        folder: str = "INBOX",
        flags: Iterable[str] = (),
    ) -> list[int]:
        """APPEND messages; returns their UIDs (from the APPENDUID response)."""
        messages = [raws] if isinstance(raws, bytes) else list(raws)
        uids = []
        with self.session(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for raw in messages:
                response = client.append(folder, raw, flags=tuple(flags))
                # b"[APPENDUID <uidvalidity> <uid>] Append completed."
                uids.append(int(response.split(b"]")[0].split()[-1]))
        return uids

    def folders(self, user: MailUser) -> set[str]:
        with self.session(user) as client:
            return {name for _flags, _delim, name in client.list_folders()}

    def list_folder(self, user: MailUser, folder: str = "INBOX") -> list[StoredMessage]:
        """Every message in ``folder`` with flags, read with BODY.PEEK (flags unchanged)."""
        with self.session(user) as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = client.search("ALL")
            if not uids:
                return []
            data = client.fetch(uids, ["FLAGS", "RFC822.SIZE", "BODY.PEEK[]"])
        return [
            StoredMessage(
                uid=uid,
                flags=frozenset(f.decode() for f in data[uid][b"FLAGS"]),
                size=data[uid][b"RFC822.SIZE"],
                raw=data[uid][b"BODY[]"],
            )
            for uid in sorted(data)
        ]

    def uids(self, user: MailUser, folder: str = "INBOX") -> list[int]:
        return [m.uid for m in self.list_folder(user, folder)]

    def uidvalidity(self, user: MailUser, folder: str = "INBOX") -> int:
        with self.session(user) as client:
            status = client.folder_status(folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def set_flags(
        self, user: MailUser, uids: Iterable[int], flags: Iterable[str], folder: str = "INBOX"
    ) -> None:
        with self.session(user) as client:
            client.select_folder(folder)
            client.add_flags(list(uids), [f.encode() for f in flags])

    # -- disturbances ----------------------------------------------------------------------

    def doveadm(self, *args: str) -> str:
        result = subprocess.run(
            [DOVEADM, "-c", str(self.config_file), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def change_uidvalidity(self, user: MailUser, folder: str = "INBOX") -> int:
        """Give ``folder`` a new UIDVALIDITY (as a server migration or rebuild does).

        ``doveadm mailbox update --uid-validity`` works for INBOX too, which cannot be deleted
        and recreated. Returns the new value.
        """
        new = self.uidvalidity(user, folder) + 1000
        self.doveadm("mailbox", "update", "-u", user.name, "--uid-validity", str(new), folder)
        return new

    def deliver_offline(self, user: MailUser, raw: bytes) -> Path:
        """Put a message into ``user``'s INBOX as an MDA does, straight into the maildir's
        ``new/``: works while the server is stopped (mail arriving during an outage of the
        IMAP/POP3 service). The user must have logged in once (the maildir exists)."""
        maildir = self.root / "home" / user.name / "Maildir"
        if not (maildir / "new").is_dir():
            raise RuntimeError(f"no maildir for {user.name} yet: log in once first")
        name = f"{time.time_ns()}.{secrets.token_hex(6)}.test"
        tmp = maildir / "tmp" / name
        tmp.write_bytes(raw)
        owner = (maildir / "new").stat()
        os.chown(tmp, owner.st_uid, owner.st_gid)
        final = maildir / "new" / name
        os.replace(tmp, final)
        return final

    def kick(self, user: MailUser) -> None:
        """Disconnect every IMAP/POP3 session of ``user`` (``doveadm kick``) and wait until
        they are gone: the kick only signals the processes, and a test that sends its next
        command at once could otherwise still be answered."""
        self.doveadm("kick", user.name)
        deadline = time.monotonic() + 5
        while user.name in self.doveadm("who") and time.monotonic() < deadline:
            time.sleep(0.02)


class CuttingProxy:
    """A loopback TCP proxy in front of a server that can cut the connection mid-stream.

    ``cut_after(n)`` closes both sides once ``n`` more bytes went from the server to the
    client: that is a connection dropped in the middle of a response (a FETCH literal), which
    a server-side kick cannot time precisely.
    """

    def __init__(self, target_port: int, target_host: str = HOST) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((HOST, 0))
        self._listener.listen()
        self.port: int = self._listener.getsockname()[1]
        self._budget: int | None = None
        self._frozen = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def cut_after(self, n_bytes: int) -> None:
        with self._lock:
            self._budget = n_bytes

    def freeze(self) -> None:
        """From now on forward nothing, in either direction, and close nothing: the
        connections go half-open, as behind a NAT box that forgot them or a server that lost
        power. Only a timeout on the client's side can notice."""
        with self._lock:
            self._frozen = True

    def thaw(self) -> None:
        """Forward again (what arrived while frozen is lost, as with a hung peer)."""
        with self._lock:
            self._frozen = False

    def drop_all(self) -> None:
        """Close every proxied connection (both sides see EOF); new ones are still accepted."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=10)
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._frozen:
                    continue
                if to_client:
                    with self._lock:
                        budget = self._budget
                        if budget is not None:
                            data = data[:budget]
                            self._budget = budget - len(data)
                    if data:
                        dst.sendall(data)
                    if budget is not None and self._budget == 0:
                        break
                else:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
