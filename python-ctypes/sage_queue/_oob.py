"""Pickle protocol 5 out-of-band buffers (numpy arrays, PickleBuffer, ...),
written once into shared memory.

An item whose pickle yields out-of-band buffers travels as one message laid
out as: a header (magic ``\\xffSQ5``, buffer count, pickle length, each
buffer's length; little endian), the pickle, then each buffer at the next
multiple of 64 bytes of the message. The producer hands the pieces to
``ring_buffer_put_msgv``, which writes them straight into the ring or the
item's side object: each buffer is copied once, from the producer's memory
into shared memory. A consumer maps an item that went out of line
(``ring_buffer_get_msg_fd`` then ``mmap``, private and writable) and
unpickles it with views of that mapping as the buffers: no copy, and the
arrays own the mapping (it lives as long as they do, whatever happens to
the queue). An item small enough to travel inside the ring is copied out of
the thread's receive buffer (which the next get reuses) into memory of its
own."""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import struct
from ctypes import POINTER, c_char_p, c_int, c_ssize_t, c_void_p
from typing import Any, List, Sequence

#: First bytes of an out-of-band message; 0xff is no pickle opcode, so
#: pickle.loads fails on it at once (the hot path tries pickle first).
MAGIC = b"\xffSQ5"
ALIGN = 64
_HEAD = struct.Struct("<4sIQ")
_PADDING = bytes(ALIGN)


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (the stable buffer protocol struct)."""

    _fields_ = [
        ("buf", c_void_p),
        ("obj", c_void_p),
        ("len", c_ssize_t),
        ("itemsize", c_ssize_t),
        ("readonly", c_int),
        ("ndim", c_int),
        ("format", c_char_p),
        ("shape", c_void_p),
        ("strides", c_void_p),
        ("suboffsets", c_void_p),
        ("internal", c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, POINTER(_PyBuffer), c_int]
_get_buffer.restype = c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [POINTER(_PyBuffer)]
_release_buffer.restype = None
_PYBUF_SIMPLE = 0


class Pieces:
    """The pieces of one out-of-band message and their addresses, holding
    the buffers (``Py_buffer`` exports) until ``release``."""

    __slots__ = ("nbytes", "addresses", "lengths", "_held", "_exports")

    def __init__(self, data: bytes, buffers: Sequence[pickle.PickleBuffer]) -> None:
        raws = [b.raw() for b in buffers]  # contiguous bytes ('B') views
        sizes = [r.nbytes for r in raws]
        header = _HEAD.pack(MAGIC, len(raws), len(data)) + struct.pack(f"<{len(raws)}Q", *sizes)
        held: List[bytes] = [header, data]
        exports: List[_PyBuffer] = []
        addresses: List[int] = []
        lengths: List[int] = []

        def add_bytes(b: bytes) -> None:
            held.append(b)
            addresses.append(ctypes.cast(c_char_p(b), c_void_p).value or 0)
            lengths.append(len(b))

        add_bytes(header)
        add_bytes(data)
        at = len(header) + len(data)
        for raw in raws:
            pad = -at % ALIGN
            if pad:
                add_bytes(_PADDING[:pad])
                at += pad
            if raw.nbytes:
                view = _PyBuffer()
                if _get_buffer(raw, ctypes.byref(view), _PYBUF_SIMPLE) != 0:
                    raise BufferError("cannot address an out-of-band buffer")
                exports.append(view)
                addresses.append(int(view.buf or 0))
                lengths.append(raw.nbytes)
                at += raw.nbytes
        self.nbytes = at
        self.addresses = addresses
        self.lengths = lengths
        self._held = held
        self._exports = exports

    def __len__(self) -> int:
        """Bytes of the message."""
        return self.nbytes

    def release(self) -> None:
        for view in self._exports:
            _release_buffer(ctypes.byref(view))
        self._exports = []


def loads(payload: memoryview, owned: bool) -> Any:
    """The item of an out-of-band message. ``owned``: ``payload`` is memory
    of this item alone (a private mapping), so its buffers are used in
    place; otherwise each is copied into a bytearray."""
    magic, count, pickle_len = _HEAD.unpack_from(payload)
    if magic != MAGIC:
        raise pickle.UnpicklingError("not a sage_queue message")
    sizes = struct.unpack_from(f"<{count}Q", payload, _HEAD.size)
    at = _HEAD.size + 8 * count
    data = payload[at : at + pickle_len]
    at += pickle_len
    buffers: List[Any] = []
    for size in sizes:
        at += -at % ALIGN
        view = payload[at : at + size]
        buffers.append(view if owned else bytearray(view))
        at += size
    return pickle.loads(data, buffers=buffers)


def loads_any(payload: memoryview) -> Any:
    """Unpickles a message that may carry out-of-band buffers (see _oob);
    its buffers are used in place when ``payload`` maps the item's own side
    object, copied otherwise."""
    try:
        return pickle.loads(payload)
    except pickle.UnpicklingError:
        if bytes(payload[: len(MAGIC)]) != MAGIC:
            raise
        return loads(payload, owned=isinstance(payload.obj, mmap.mmap))


def map_file(fd: int, length: int) -> memoryview:
    """The side object ``fd`` (ours alone, already unlinked) mapped private
    and writable; the descriptor is closed, the mapping lives as long as
    views of it do."""
    try:
        mapping = mmap.mmap(fd, length, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    return memoryview(mapping)
