"""How a client authenticates to Kafka: one frozen settings object shared by agents and workers.

:class:`KafkaSecurity` holds the security protocol (``PLAINTEXT``, ``SSL`` or ``SASL_SSL``),
the SASL mechanism and user, the password (read from a file or handed over from an
environment variable by the entry point, never from a command-line flag) and the TLS
files (the CA that signed the brokers' certificates; a client certificate and key for
mutual TLS). It renders the settings for kafka-python (:meth:`KafkaSecurity.kafka_python_kwargs`)
and an :class:`ssl.SSLContext` for aiokafka/Faust, and the flags that hand the same
settings to a child process without its password (:meth:`KafkaSecurity.cli_args`).

It lives in the base layer because both sides of the wire use it: the node agents
(kafka-python producers) and the stream workers (Faust, admin clients).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from trainguard.errors import ConfigError

__all__ = ["PLAINTEXT", "KafkaSecurity", "SaslMechanism", "SecurityProtocol"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
_PROTOCOLS: tuple[str, ...] = get_args(SecurityProtocol)
_MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)


@dataclass(frozen=True)
class KafkaSecurity:
    """A Kafka client's security settings; the default is plain, unauthenticated TCP.

    ``password`` never appears in ``repr`` and is not compared; build one with a
    password from a file or the environment through :meth:`load`.
    """

    protocol: SecurityProtocol = "PLAINTEXT"
    mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str = ""
    #: Where the password was read from (handed to child processes instead of the password).
    password_file: Path | None = None
    password: str = field(default="", repr=False, compare=False)
    #: The CA certificate(s) that signed the brokers' certificates (PEM); none: system CAs.
    ca_file: Path | None = None
    #: Client certificate and key (PEM) for mutual TLS; optional.
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        """Reject combinations a client cannot connect with, naming the setting."""
        if self.protocol not in _PROTOCOLS:
            raise ConfigError(f"unknown Kafka security protocol {self.protocol!r}; expected "
                              f"one of: {', '.join(_PROTOCOLS)}")
        if self.mechanism not in _MECHANISMS:
            raise ConfigError(f"unknown SASL mechanism {self.mechanism!r}; expected one of: "
                              f"{', '.join(_MECHANISMS)}")
        if self.sasl:
            if not self.username:
                raise ConfigError("Kafka security protocol SASL_SSL needs a username")
            if not self.password:
                raise ConfigError(f"Kafka user {self.username!r} has no password; give a "
                                  "password file or the password environment variable")
        elif self.username or self.password:
            raise ConfigError(f"a Kafka username/password is set but the security protocol "
                              f"is {self.protocol}; use SASL_SSL to authenticate with them")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("a Kafka client certificate needs its key and a key its "
                              f"certificate; got cert_file={self.cert_file}, "
                              f"key_file={self.key_file}")
        if not self.tls and any(f is not None for f in (self.ca_file, self.cert_file)):
            raise ConfigError("Kafka TLS files are set but the security protocol is "
                              "PLAINTEXT; use SSL or SASL_SSL")

    @classmethod
    def load(
        cls,
        protocol: str = "PLAINTEXT",
        *,
        mechanism: str = "SCRAM-SHA-512",
        username: str = "",
        password_file: Path | str | None = None,
        password_env: str | None = None,
        ca_file: Path | str | None = None,
        cert_file: Path | str | None = None,
        key_file: Path | str | None = None,
    ) -> KafkaSecurity:
        """Build validated settings, reading the password from ``password_file``.

        ``password_env`` is the value of the password environment variable, handed over
        by the entry point; a password file wins over it. Files must exist.
        """
        password = ""
        pw_path = Path(password_file) if password_file else None
        if pw_path is not None:
            try:
                password = pw_path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"cannot read the Kafka password file '{pw_path}': "
                                  f"{exc.strerror}") from None
            if not password:
                raise ConfigError(f"the Kafka password file '{pw_path}' is empty")
        elif password_env:
            password = password_env
        files = {name: Path(value) if value else None for name, value in
                 (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file))}
        for name, path in files.items():
            if path is not None and not path.is_file():
                raise ConfigError(f"Kafka {name.replace('_', ' ')} '{path}' does not exist")
        return cls(protocol=protocol.upper(), mechanism=mechanism.upper(),  # type: ignore[arg-type]
                   username=username, password_file=pw_path, password=password, **files)

    @property
    def tls(self) -> bool:
        """Whether the connection is encrypted (``SSL`` or ``SASL_SSL``)."""
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        """Whether the client authenticates with a SASL user and password."""
        return self.protocol == "SASL_SSL"

    def describe(self) -> str:
        """One line for logs: protocol, mechanism and user, never the password."""
        if self.sasl:
            return f"{self.protocol} {self.mechanism} user={self.username}"
        return self.protocol

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context for aiokafka/Faust, or ``None`` for PLAINTEXT."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file is not None else None)
            if self.cert_file is not None and self.key_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the Kafka TLS files (ca={self.ca_file}, "
                              f"cert={self.cert_file}, key={self.key_file}): {exc}") from None
        return context

    def kafka_python_kwargs(self) -> dict[str, object]:
        """Settings for kafka-python's producer, consumer and admin client ({} when plain)."""
        if self.protocol == "PLAINTEXT":
            return {}
        out: dict[str, object] = {"security_protocol": self.protocol,
                                  "ssl_check_hostname": True}
        if self.ca_file is not None:
            out["ssl_cafile"] = str(self.ca_file)
        if self.cert_file is not None and self.key_file is not None:
            out["ssl_certfile"] = str(self.cert_file)
            out["ssl_keyfile"] = str(self.key_file)
        if self.sasl:
            out.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                       sasl_plain_password=self.password)
        return out

    def aiokafka_kwargs(self) -> dict[str, object]:
        """Settings for aiokafka's clients, what Faust passes them ({} when plain)."""
        if not self.tls:
            return {}
        out: dict[str, object] = {"security_protocol": self.protocol,
                                  "ssl_context": self.ssl_context()}
        if self.sasl:
            out.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                       sasl_plain_password=self.password)
        return out

    def cli_args(self) -> list[str]:
        """The ``--kafka-*`` flags that give a child process these settings.

        The password travels as its file's path only; settings whose password came from
        the environment cannot be handed over this way.
        """
        if self.protocol == "PLAINTEXT":
            return []
        args = ["--kafka-security-protocol", self.protocol]
        if self.sasl:
            if self.password_file is None:
                raise ConfigError(f"Kafka user {self.username!r} has no password file to hand "
                                  "to a child process (passwords never go on a command line)")
            args += ["--kafka-sasl-mechanism", self.mechanism, "--kafka-username",
                     self.username, "--kafka-password-file", str(self.password_file)]
        for flag, path in (("--kafka-ca-file", self.ca_file), ("--kafka-cert-file",
                           self.cert_file), ("--kafka-key-file", self.key_file)):
            if path is not None:
                args += [flag, str(path)]
        return args


#: Plain, unauthenticated TCP: what every client uses unless configured otherwise.
PLAINTEXT = KafkaSecurity()
