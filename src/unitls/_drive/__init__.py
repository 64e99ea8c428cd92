"""The one TLS driver: runs TLS operations over a transport, using only the PEP's ``TLSBuffer``.

``BufferSocket`` (``unitls._socket``), the ``ssl`` bridge's ``SocketTLS``/``BioTLS``
(``unitls.compat._sslobj``) and asyncio's ``TLSProtocol`` (``unitls.asyncio``) are shells over it:
they supply their I/O (a ``Transport``, or events for asyncio) and map its exceptions to their
own vocabulary. Nothing else in unitls decides how TLS meets I/O. The rules below are the
contract every socket path follows (a native socket path must obey them too; the fault suite in
``tests/test_faults.py`` checks them through a "socket factory").

Vocabulary
----------
engine
    The ``TLSBuffer``. Every call into it is made under ``Core.lock``, so engines need not be
    thread-safe; no socket I/O ever happens under that lock.
backlog
    Ciphertext received from the transport that the engine refused (``process_incoming`` raised
    ``WantReadError``: the PEP lets an engine refuse while it is full). It is given to the engine
    before anything received later, chunk by chunk, in order; nothing is ever dropped.
eof
    The transport's end. It is handed to the engine (``process_incoming(b"")``) after the
    backlog, exactly once.
unsent
    Ciphertext taken out of the engine that the transport did not accept yet (a full socket on a
    non-blocking or timed-out call). It goes out before anything the engine produces later.
readahead
    Plaintext decrypted ahead of the caller by ``pending()``; reads return it first.

Rules
-----
1. **One retry loop.** An operation calls the engine; on ``WantReadError`` it first refills the
   engine from the backlog, otherwise it sends what the engine produced and receives one chunk
   (``Driver._receive``); on ``WantWriteError`` it sends; then it calls the engine again. Only
   the ``Driver`` methods below do this.
2. **Deadlines.** A timeout bounds an operation as a whole, like ``ssl.SSLSocket``: ``connect``
   (TCP + handshake), ``accept`` (its handshake), ``do_handshake``, ``recv``, ``sendall``,
   ``close``, ``upgrade``. A peer sending one byte at a time cannot stretch it: every wait gets
   only what is left (``Deadline.remaining``), and ``TLSTimeoutError`` is raised once it is gone.
3. **Non-blocking** (timeout 0) operations never wait: they raise ``WantReadError`` /
   ``WantWriteError`` and are retried by the caller with the same arguments. Nothing is lost or
   reordered: plaintext that was decrypted is returned even if sending the engine's answer
   would block (that ciphertext waits in *unsent*); a ``send`` that finds *unsent* still stuck
   raises ``WantWriteError`` before taking anything; once it took data, it returns the count even
   if part of its ciphertext is still *unsent* (the bridge reports ``SSLWantWriteError`` instead,
   and its retry returns the count, as OpenSSL does).
4. **Full duplex.** One reader thread and one writer thread may share a connection. Ciphertext
   leaves in engine order under ``Driver._send_lock``; whoever holds it sends. Reads never wait
   for that lock: a reader that produced ciphertext (a KeyUpdate answer, an alert) tries the
   lock, and if a writer holds it, leaves the ciphertext to that writer, who checks again after
   releasing the lock (``_flush_wanted``). While a reader waits for data it also sends its own
   *unsent* ciphertext when the socket has room (so a peer that only writes cannot deadlock it).
   Receiving is serialised by ``_recv_lock``; a receiver that waited for it retries the engine
   before receiving again (another thread's chunk may be what it needed).
5. **EOF.** A transport EOF, or a reset while reading, is handed to the engine, which tells a
   clean close (``read`` returns ``b""`` after close_notify) from a ragged one (``RaggedEOF``) or
   a handshake cut short (``HandshakeClosedError``). An engine that asks for more input after EOF
   gets the same answer from the driver. A reset while sending is a ``TLSConnectionError``.
6. **Close.** ``shutdown()`` queues close_notify and sends it; nothing can be written after it,
   and reads stay TLS-protected until the peer's close_notify. ``await_close_notify()`` reads and
   discards until the peer's close_notify or EOF. After a failed handshake, shells deliver the
   engine's alert, half-close, and drain briefly before closing (``linger_close``), so that a TCP
   reset does not destroy the alert. ``close()`` from another thread ends a call blocked on the
   socket (a ``recv`` waiting for data, a ``sendall`` waiting for room) with ``TLSError`` at
   once: the shell shuts the socket down under it before closing (``SocketIO.stop``; the native
   core also waits for such calls to leave, so that the descriptor's number, free again, is
   never used by a call still inside).
7. **Errors.** An engine ``TLSError`` is raised as is, after trying to deliver the alert the
   engine queued. Transport failures become ``TLSConnectionError``/``TLSTimeoutError`` with the
   ``OSError`` chained. Shells translate these to their own exceptions; they never invent others.
"""

from ._core import Core, Driver, map_os_error
from ._io import NOW, Deadline, MemoryIO, SocketIO, Transport, wait_fd
from ._linger import LINGER, linger_close

__all__ = [
    "LINGER",
    "NOW",
    "Core",
    "Deadline",
    "Driver",
    "MemoryIO",
    "SocketIO",
    "Transport",
    "linger_close",
    "map_os_error",
    "wait_fd",
]
