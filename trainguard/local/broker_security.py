"""The local broker's secure mode: a CA and broker certificate, SCRAM users, listener settings.

For local use only (the demo, the tests, a developer's machine): :func:`ensure_credentials`
writes, once per directory, a private CA and a broker certificate signed by it (EC P-256,
made with the ``openssl`` command-line tool), the broker's PKCS#12 keystore, and one
random password file per SCRAM user (mode 0600)::

    <dir>/ca.pem, ca.key          the CA clients trust (its key signs the broker's cert)
    <dir>/broker.p12              the broker's key and certificate chain
    <dir>/<user>.password         admin (super user), worker, agent, ...

:func:`secure_listener_properties` configures the broker: a ``SASL_SSL`` listener
(SCRAM-SHA-512 over TLS) for clients and for the broker's own inter-broker connections
(as ``admin``), and the KRaft controller listener on TLS with client certificates (the
broker's certificate, a super user: KRaft cannot use SCRAM on the controller listener).
Kafka's ``StandardAuthorizer`` refuses whatever no ACL allows.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainguard.errors import BrokerError
from trainguard.schemas.kafka_security import KafkaSecurity

__all__ = ["ADMIN", "DEFAULT_USERS", "LocalCredentials", "ensure_credentials",
           "scram_format_args", "secure_listener_properties"]

log = logging.getLogger(__name__)

#: The super user: the broker's inter-broker login, topics and ACLs.
ADMIN = "admin"
#: SCRAM users of a local secure broker: admin, the stream workers, the node agents.
DEFAULT_USERS = (ADMIN, "worker", "agent")
#: The broker certificate's subject; its principal is a super user on the controller listener.
BROKER_CN = "trainguard-broker"
_MECHANISM = "SCRAM-SHA-512"
_OPENSSL_TIMEOUT_S = 60.0
#: ``openssl req`` settings of the CA, so that the host's openssl.cnf plays no part.
_CA_CONFIG = "\n".join([
    "[req]",
    "distinguished_name = dn",
    "x509_extensions = v3_ca",
    "prompt = no",
    "[dn]",
    "CN = trainguard local CA",
    "[v3_ca]",
    "basicConstraints = critical,CA:TRUE",
    "keyUsage = critical,keyCertSign,cRLSign",
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid:always",
    "",
])
_CERT_EXTENSIONS = "\n".join([
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature",
    "extendedKeyUsage=serverAuth,clientAuth",
    "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "subjectKeyIdentifier=hash",
    "authorityKeyIdentifier=keyid,issuer",
    "",
])


@dataclass(frozen=True)
class LocalCredentials:
    """Where a local secure broker's certificates and passwords are; see the module doc."""

    directory: Path
    users: tuple[str, ...] = DEFAULT_USERS

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) clients verify the broker with."""
        return self.directory / "ca.pem"

    @property
    def keystore(self) -> Path:
        """The broker's PKCS#12 keystore (key + certificate chain)."""
        return self.directory / "broker.p12"

    @property
    def keystore_password_file(self) -> Path:
        """The keystore's password."""
        return self.directory / "keystore.password"

    def password_file(self, user: str) -> Path:
        """The file holding ``user``'s SCRAM password."""
        if user not in self.users:
            raise BrokerError(f"unknown local Kafka user {user!r}; expected one of: "
                              f"{', '.join(self.users)}")
        return self.directory / f"{user}.password"

    def password(self, user: str) -> str:
        """``user``'s SCRAM password."""
        return self.password_file(user).read_text(encoding="utf-8").strip()

    def client(self, user: str) -> KafkaSecurity:
        """Client settings for ``user``: SASL_SSL, SCRAM-SHA-512, this CA."""
        return KafkaSecurity.load("SASL_SSL", mechanism=_MECHANISM, username=user,
                                  password_file=self.password_file(user), ca_file=self.ca_file)

    def complete(self) -> bool:
        """Whether every file exists (else :func:`ensure_credentials` writes them anew)."""
        files = [self.ca_file, self.keystore, self.keystore_password_file,
                 *(self.password_file(u) for u in self.users)]
        return all(f.is_file() for f in files)


def ensure_credentials(directory: Path, users: Sequence[str] = DEFAULT_USERS,
                       openssl: str = "openssl") -> LocalCredentials:
    """Write the CA, broker keystore and passwords into ``directory`` unless all exist."""
    names = tuple(dict.fromkeys([ADMIN, *users]))
    for user in names:
        if not user.replace("-", "").replace("_", "").isalnum():
            raise BrokerError(f"invalid Kafka user name {user!r}; expected letters, digits, "
                              "'-' and '_'")
    creds = LocalCredentials(Path(directory).resolve(), names)
    if creds.complete():
        return creds
    tool = shutil.which(openssl)
    if tool is None:
        raise BrokerError(f"'{openssl}' not found on PATH; the local broker's secure mode "
                          "makes its certificates with it (apt-get install openssl)")
    d = creds.directory
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for user in names:
        _write_secret(creds.password_file(user), secrets.token_urlsafe(24))
    _write_secret(creds.keystore_password_file, secrets.token_urlsafe(24))
    _write_secret(d / "broker.ext", _CERT_EXTENSIONS)
    _write_secret(d / "ca.cnf", _CA_CONFIG)
    ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
    steps = [
        ["genpkey", *ec, "-out", "ca.key"],
        ["req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
         "-config", "ca.cnf", "-out", "ca.pem"],
        ["genpkey", *ec, "-out", "broker.key"],
        ["req", "-new", "-key", "broker.key", "-config", "ca.cnf", "-subj", f"/CN={BROKER_CN}",
         "-out", "broker.csr"],
        ["x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-set_serial", str(secrets.randbits(63)), "-days", "825", "-sha256",
         "-extfile", "broker.ext", "-out", "broker.pem"],
        ["pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile",
         "ca.pem", "-name", "broker", "-out", "broker.p12",
         "-passout", f"file:{creds.keystore_password_file}"],
    ]
    for args in steps:
        _openssl(tool, args, d)
    for name in ("ca.key", "broker.key", "broker.p12"):
        os.chmod(d / name, 0o600)
    (d / "broker.csr").unlink(missing_ok=True)
    log.info("local kafka credentials written dir=%s users=%s", d, ",".join(names))
    return creds


def secure_listener_properties(creds: LocalCredentials, port: int,
                               controller_port: int) -> list[str]:
    """``server.properties`` lines of a secure single-node broker (listeners, TLS, ACLs)."""
    keystore_pw = creds.keystore_password_file.read_text(encoding="utf-8").strip()
    admin_pw = creds.password(ADMIN)
    jaas = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{admin_pw}";')
    return [
        f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=SASL_SSL",
        "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        f"sasl.enabled.mechanisms={_MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={_MECHANISM}",
        f"listener.name.sasl_ssl.{_MECHANISM.lower()}.sasl.jaas.config={jaas}",
        # The controller listener knows the broker by its certificate (KRaft cannot use
        # SCRAM there: the credentials live in the metadata it serves).
        "listener.name.controller.ssl.client.auth=required",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.location={creds.keystore}",
        f"ssl.keystore.password={keystore_pw}",
        f"ssl.key.password={keystore_pw}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={creds.ca_file}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found=false",
        f"super.users=User:{ADMIN};User:CN={BROKER_CN}",
    ]


def scram_format_args(creds: LocalCredentials) -> list[str]:
    """``kafka-storage format`` arguments that create every user's SCRAM credential."""
    args = []
    for user in creds.users:
        args += ["--add-scram", f"{_MECHANISM}=[name={user},password={creds.password(user)}]"]
    return args


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to a new file only its owner can read."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text if text.endswith("\n") else text + "\n")


def _openssl(tool: str, args: list[str], cwd: Path) -> None:
    try:
        proc = subprocess.run([tool, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=_OPENSSL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"'openssl {args[0]}' took over {_OPENSSL_TIMEOUT_S:g}s") from exc
    if proc.returncode != 0:
        raise BrokerError(f"'openssl {' '.join(args[:2])}' failed in '{cwd}' "
                          f"(exit {proc.returncode}): {proc.stdout.strip()[-2000:]}")
