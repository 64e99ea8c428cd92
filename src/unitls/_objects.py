"""Certificates, private keys, signing chains and trust stores: immutable values.

Like the PEP says, these classes only record *where* material comes from (a buffer, a file or an
opaque identifier); engines read and parse it. Unlike the reference implementation they are
values: hashable, comparable, never mutated, and a private key buffer is never written to disk.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import Any

from ._errors import ConfigurationError

__all__ = ["MAX_FILE_SIZE", "Certificate", "PrivateKey", "SigningChain", "TrustStore", "read_file"]

#: The largest certificate, key or trust store file read (a system CA bundle is about 0.2 MiB).
MAX_FILE_SIZE = 16 * 1024 * 1024


def _check_stat(st: os.stat_result, path: str, what: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigurationError(
            f"{what} file {path!r} is not a regular file (a device, FIFO or directory cannot be "
            "read as key material): give the path of a PEM or DER file"
        )
    if st.st_size > MAX_FILE_SIZE:
        raise ConfigurationError(
            f"{what} file {path!r} is {st.st_size} bytes, over the {MAX_FILE_SIZE}-byte limit "
            "for certificates, keys and trust stores"
        )


def _check_file(path: str, what: str) -> None:
    """Refuse at once a path that names something other than a regular file of sensible size.

    A missing file is not an error yet: it is read (and reported) when an engine loads it.
    """
    try:
        st = os.stat(path)
    except OSError:
        return
    _check_stat(st, path, what)


def read_file(path: str, what: str) -> bytes:
    """The contents of a certificate, key or trust store file, for the engines.

    Checked again on the open file (it may have been replaced since ``from_file``); opened
    non-blocking, so a FIFO put in its place fails at once instead of waiting for a writer.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {what} file {path!r}: {exc.strerror or exc}"
        ) from exc
    with open(fd, "rb", closefd=True) as f:
        _check_stat(os.fstat(fd), path, what)
        try:
            data = f.read(MAX_FILE_SIZE + 1)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read {what} file {path!r}: {exc.strerror or exc}"
            ) from exc
    if len(data) > MAX_FILE_SIZE:
        raise ConfigurationError(f"{what} file {path!r} is over the {MAX_FILE_SIZE}-byte limit")
    if not data:
        raise ConfigurationError(f"{what} file {path!r} is empty")
    return data


def _bytes_arg(name: str, value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if not data:
            raise ValueError(f"{name} must not be empty")
        return data
    if isinstance(value, str):
        raise TypeError(f"{name} must be bytes, not str (encode PEM text with .encode('ascii'))")
    raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


def _path_arg(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not path:
            raise ValueError(f"{name} must not be empty")
        return path
    raise TypeError(f"{name} must be a str or os.PathLike, not {type(value).__name__}")


class _Source:
    """Shared value behaviour of Certificate, PrivateKey and TrustStore."""

    __slots__ = ("_buffer", "_id", "_path")
    _kind = "object"
    _what = "key material"

    _buffer: bytes | None
    _path: str | None
    _id: bytes | None

    def __init__(
        self,
        buffer: bytes | None = None,
        path: os.PathLike[str] | str | None = None,
        id: bytes | None = None,
    ) -> None:
        sources = [s for s in (buffer, path, id) if s is not None]
        if len(sources) > 1:
            raise ValueError(f"{type(self).__name__} takes one of buffer, path or id, not several")
        object.__setattr__(self, "_buffer", _bytes_arg("buffer", buffer))
        object.__setattr__(self, "_path", _path_arg("path", path))
        object.__setattr__(self, "_id", _bytes_arg("id", id))
        if self._path is not None:
            _check_file(self._path, self._what)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} objects are immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} objects are immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Source)
        return (self._buffer, self._path, self._id) == (other._buffer, other._path, other._id)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._buffer, self._path, self._id))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._buffer, self._path, self._id))

    def __repr__(self) -> str:
        if self._buffer is not None:
            return f"{type(self).__name__}.from_buffer(<{len(self._buffer)} bytes>)"
        if self._path is not None:
            return f"{type(self).__name__}.from_file({self._path!r})"
        if self._id is not None:
            return f"{type(self).__name__}.from_id({self._id!r})"
        return f"{type(self).__name__}.system()"

    @property
    def buffer(self) -> bytes | None:
        """The in-memory bytes (PEM or DER), if created from a buffer."""
        return self._buffer

    @property
    def path(self) -> str | None:
        """The file path, if created from a file."""
        return self._path

    @property
    def id(self) -> bytes | None:
        """The opaque identifier, if created from an id."""
        return self._id


class Certificate(_Source):
    """A certificate used in TLS, from a buffer (PEM or DER), a file, or an identifier."""

    __slots__ = ()
    _what = "certificate"

    def __init__(
        self,
        buffer: bytes | None = None,
        path: os.PathLike[str] | str | None = None,
        id: bytes | None = None,
    ) -> None:
        if buffer is None and path is None and id is None:
            raise ValueError("Certificate cannot be empty: give a buffer, a path or an id")
        super().__init__(buffer, path, id)

    @classmethod
    def from_buffer(cls, buffer: bytes) -> Certificate:
        """A certificate from PEM (starting with ``-----BEGIN CERTIFICATE-----``) or DER bytes."""
        return cls(buffer=buffer)

    @classmethod
    def from_file(cls, path: os.PathLike[str] | str) -> Certificate:
        """A certificate from a PEM or DER file on disk."""
        return cls(path=path)

    @classmethod
    def from_id(cls, id: bytes) -> Certificate:
        """A certificate from an engine-specific identifier (e.g. a system store entry)."""
        return cls(id=id)


class PrivateKey(_Source):
    """A private key matching a certificate, from a buffer (PEM or DER), a file, or an id.

    Buffers are handed to engines in memory; unitls never writes them to disk.
    """

    __slots__ = ()
    _what = "private key"

    def __init__(
        self,
        buffer: bytes | None = None,
        path: os.PathLike[str] | str | None = None,
        id: bytes | None = None,
    ) -> None:
        if buffer is None and path is None and id is None:
            raise ValueError("PrivateKey cannot be empty: give a buffer, a path or an id")
        super().__init__(buffer, path, id)

    def __repr__(self) -> str:
        # Never show key material, not even its length.
        if self._buffer is not None:
            return "PrivateKey.from_buffer(<redacted>)"
        return super().__repr__()

    @classmethod
    def from_buffer(cls, buffer: bytes) -> PrivateKey:
        """A private key from PEM or DER bytes."""
        return cls(buffer=buffer)

    @classmethod
    def from_file(cls, path: os.PathLike[str] | str) -> PrivateKey:
        """A private key from a PEM or DER file on disk."""
        return cls(path=path)

    @classmethod
    def from_id(cls, id: bytes) -> PrivateKey:
        """A private key from an engine-specific identifier (HSM, system store...)."""
        return cls(id=id)


class TrustStore(_Source):
    """The certificates used to verify the peer: the system's, or from a buffer, a file, an id."""

    __slots__ = ()
    _what = "trust store"

    @classmethod
    def system(cls) -> TrustStore:
        """The system trust database."""
        return cls()

    @classmethod
    def from_buffer(cls, buffer: bytes) -> TrustStore:
        """Trust anchors from a buffer of PEM certificates (or one DER certificate)."""
        return cls(buffer=buffer)

    @classmethod
    def from_file(cls, path: os.PathLike[str] | str) -> TrustStore:
        """Trust anchors from a file of PEM certificates."""
        return cls(path=path)

    @classmethod
    def from_id(cls, id: bytes) -> TrustStore:
        """Trust anchors from an engine-specific identifier."""
        return cls(id=id)

    @property
    def is_system(self) -> bool:
        """True when this is the system trust store."""
        return self._buffer is None and self._path is None and self._id is None


class SigningChain:
    """A leaf certificate with its private key, and the intermediates to send with it.

    ``chain`` is a tuple (the PEP shows a list; a tuple keeps the object a hashable value).
    """

    __slots__ = ("_chain", "_leaf")

    _leaf: tuple[Certificate, PrivateKey | None]
    _chain: tuple[Certificate, ...]

    def __init__(
        self,
        leaf: tuple[Certificate, PrivateKey | None],
        chain: Sequence[Certificate] | None = None,
    ) -> None:
        if not isinstance(leaf, tuple) or len(leaf) != 2:
            raise TypeError("leaf must be a (Certificate, PrivateKey | None) tuple")
        cert, key = leaf
        if not isinstance(cert, Certificate):
            raise TypeError(f"leaf certificate must be a Certificate, not {type(cert).__name__}")
        if key is not None and not isinstance(key, PrivateKey):
            raise TypeError(f"leaf key must be a PrivateKey or None, not {type(key).__name__}")
        if isinstance(chain, (str, bytes)):
            raise TypeError("chain must be a sequence of Certificate objects")
        chain_t = tuple(chain) if chain is not None else ()
        for c in chain_t:
            if not isinstance(c, Certificate):
                raise TypeError(
                    f"chain entries must be Certificate objects, not {type(c).__name__}"
                )
        object.__setattr__(self, "_leaf", (cert, key))
        object.__setattr__(self, "_chain", chain_t)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SigningChain objects are immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} objects are immutable")

    @property
    def leaf(self) -> tuple[Certificate, PrivateKey | None]:
        """The leaf certificate and its private key (None when the key is inside the cert file)."""
        return self._leaf

    @property
    def chain(self) -> tuple[Certificate, ...]:
        """Intermediate certificates, leaf-most first."""
        return self._chain

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SigningChain):
            return NotImplemented
        return self._leaf == other._leaf and self._chain == other._chain

    def __hash__(self) -> int:
        return hash((self._leaf, self._chain))

    def __reduce__(self) -> tuple[Any, ...]:
        return (SigningChain, (self._leaf, self._chain))

    def __repr__(self) -> str:
        return f"SigningChain(leaf={self._leaf!r}, chain={list(self._chain)!r})"
