"""Pickle protocol 5 out-of-band buffers (numpy arrays, PickleBuffer, ...),
written once into shared memory.

An item whose pickle yields out-of-band buffers travels as one message laid
out as: a header (magic ``\\xffSQ5``, buffer count, pickle length, each
buffer's length; little endian), the pickle, then each buffer at the next
multiple of 64 bytes of the message. The producer hands the pieces to
``ring_buffer_put_msgv``, which writes them straight into the ring or the
item's slot of the queue's pool (or side object): each buffer is copied
once, from the producer's memory into shared memory. A consumer borrows an
item that went out of line where it lies (``ring_buffer_get_msg_lease``, see
``lent``) and unpickles it with views of that memory as the buffers: no
copy, and the arrays own the lease (the memory stays theirs as long as they
live, whatever happens to the queue; when the last view is gone the slot
goes back to the pool). An item small enough to travel inside the ring is
copied out of the thread's receive buffer (which the next get reuses) into
memory of its own.

Large ``bytes`` inside an item are not copied by the producer either:
``dumps_large`` pickles into a sink that keeps the pickler's chunks as they
are, and the pickler hands each bytes payload of 64 KiB or more over as
the object itself (a str's UTF-8, a bytearray's copy, made once);
the message is those chunks, written once into shared memory by
``put_msgv``. A ``bytes`` object owns its memory, so the consumer's
``pickle.loads`` makes the one copy that builds it (from the mapping, for
an item that went out of line); numpy arrays and PickleBuffers are used in
place as above."""

from __future__ import annotations

import ctypes
import pickle
import struct
import sys
from ctypes import POINTER, c_char_p, c_int, c_ssize_t, c_uint32, c_void_p
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from . import _lib

#: First bytes of an out-of-band message; 0xff is no pickle opcode, so
#: pickle.loads fails on it at once (the hot path tries pickle first).
MAGIC = b"\xffSQ5"
ALIGN = 64
_HEAD = struct.Struct("<4sIQ")
_PADDING = bytes(ALIGN)
PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Items (str, bytes, bytearray) of this many bytes or more, and items
#: after a pickle this large, are pickled by ``dumps_large``. Below it
#: ``pickle.dumps`` costs less than making pieces (~5 us); above it, its
#: output buffer moves to fresh mmap'd memory and costs ~0.8 ms per MiB
#: (measured here, CPython 3.11: 1.6 us at 64 KiB, 4.9 us at 192 KiB, 245 us
#: at 224 KiB). In ``dumps_large`` the pickler hands over every payload of
#: 64 KiB or more (its frame size target) as it is.
LARGE = 192 << 10


def _header(inband: int, sizes: Sequence[int]) -> bytes:
    """The header of an out-of-band message: the magic, the buffer count,
    the pickle's length and each buffer's length."""
    return _HEAD.pack(MAGIC, len(sizes), inband) + struct.pack(f"<{len(sizes)}Q", *sizes)


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
_c_char = ctypes.c_char
_addressof = ctypes.addressof


def _cast_address(b: bytes) -> int:
    """Address of the bytes of ``b`` (which must stay alive meanwhile)."""
    return ctypes.cast(c_char_p(b), c_void_p).value or 0


#: Where a bytes object's data starts in it, if CPython lays it out as it
#: does (``id`` is the address, data right after a fixed header): then an
#: address costs an addition (~0.1 us) instead of a cast (~0.75 us, three
#: per out-of-band item). Checked against the cast at import.
_probe = b"sage_queue"
_BYTES_DATA_OFFSET = _cast_address(_probe) - id(_probe)
if _BYTES_DATA_OFFSET == bytes.__basicsize__ - 1:

    def _bytes_address(b: bytes) -> int:
        return id(b) + _BYTES_DATA_OFFSET

else:  # pragma: no cover (another interpreter's layout)
    _bytes_address = _cast_address
del _probe


#: ``Pieces.vectors``' C array types by count (ctypes keeps every array
#: type it makes anyway).
_VECTOR_TYPES: Dict[int, Tuple[Any, Any]] = {}


class Pieces:
    """The pieces of one message and their addresses, holding the objects
    they point into (``Py_buffer`` exports) until ``release``: the pickle
    (one or more chunks: see ``dumps_large``), and after it, if the pickler
    gave out-of-band buffers, each buffer (then the message starts with the
    header that says where they are)."""

    __slots__ = ("nbytes", "inband", "addresses", "lengths", "_held", "_exports", "_c_lengths")

    def __init__(self, chunks: Sequence[bytes], buffers: Sequence[pickle.PickleBuffer]) -> None:
        self._c_lengths: Any = None
        raws = [b.raw() for b in buffers]  # contiguous bytes ('B') views
        held: List[Any] = []  # bytes, and ctypes objects holding exports
        exports: List[_PyBuffer] = []
        addresses: List[int] = []
        lengths: List[int] = []

        def add(b: Any, size: int) -> None:
            if type(b) is bytes:
                held.append(b)
                addresses.append(_bytes_address(b))
            else:
                view = _PyBuffer()
                if _get_buffer(b, ctypes.byref(view), _PYBUF_SIMPLE) != 0:
                    raise BufferError("cannot address an out-of-band buffer")
                exports.append(view)
                addresses.append(int(view.buf or 0))
            lengths.append(size)

        self._held = held
        self._exports = exports
        self.addresses = addresses
        self.lengths = lengths
        inband = sum(map(len, chunks))
        at = 0
        try:
            if raws:
                sizes = [r.nbytes for r in raws]
                header = _header(inband, sizes)
                add(header, len(header))
                at = len(header)
            for chunk in chunks:
                if len(chunk):
                    add(chunk, len(chunk))
            at += inband
            for raw in raws:
                pad = -at % ALIGN
                if pad:
                    add(_PADDING[:pad], pad)
                    at += pad
                if raw.nbytes:
                    add(raw, raw.nbytes)
                    at += raw.nbytes
        except BaseException:
            self.release()
            raise
        #: Bytes of the message; of its pickle (without the buffers).
        self.nbytes = at
        self.inband = inband

    def __len__(self) -> int:
        """Bytes of the message."""
        return self.nbytes

    def release(self) -> None:
        for view in self._exports:
            _release_buffer(ctypes.byref(view))
        self._exports = []
        self._held = []  # (with them, exports held by ctypes objects)

    def vectors(self) -> Tuple[Any, Any, int]:
        """``ring_buffer_put_msgv``'s arguments: the addresses and the
        lengths as C arrays, and their count (the array types made once per
        count: ``c_void_p * n`` costs ~0.35 us a call)."""
        n = len(self.addresses)
        types = _VECTOR_TYPES.get(n)
        if types is None:
            types = _VECTOR_TYPES[n] = (c_void_p * n, c_uint32 * n)
        lengths = self._c_lengths
        if lengths is None:
            lengths = types[1](*self.lengths)
        return types[0](*self.addresses), lengths, n

    @classmethod
    def of_array(cls, prefix: bytes, inband: int, array: Any, c_lengths: Any) -> "Pieces":
        """The pieces of a C-contiguous array's message: ``prefix`` (its
        header, pickle and padding, see ``array_pieces``), then the array's
        data, exported until ``release``. ``c_lengths``: the two lengths as
        the C array ``vectors`` gives (made once per kind of array; the C
        library only reads it)."""
        self = cls.__new__(cls)
        self._c_lengths = c_lengths
        try:
            # A writable array: a ctypes object over its first byte holds
            # the export (~0.35 us; a Py_buffer through ctypes ~1 us).
            holder = _c_char.from_buffer(array)
        except TypeError:  # read-only
            view = _PyBuffer()
            if _get_buffer(array, ctypes.byref(view), _PYBUF_SIMPLE) != 0:
                raise BufferError("cannot address the array's data") from None
            self._held = [prefix]
            self._exports = [view]
            address = int(view.buf or 0)
        else:
            self._held = [prefix, holder]
            self._exports = []
            address = _addressof(holder)
        size = array.nbytes
        self.addresses = [_bytes_address(prefix), address]
        self.lengths = [len(prefix), size]
        self.nbytes = len(prefix) + size
        self.inband = inband
        return self


#: numpy's ndarray type, once numpy is imported (``array_pieces``).
_ndarray: Optional[type] = None
#: Message prefixes of arrays (header, pickle, padding) by dtype, shape and
#: writability, their pickles' lengths, the message's two lengths as a C
#: array (see ``Pieces.vectors``) and the prefix's address: see
#: ``array_pieces``.
_ARRAY_PREFIXES: Dict[Tuple[Any, ...], Tuple[bytes, int, Any, int]] = {}
#: Entries each of those tables keeps at most (a bound: shapes may vary
#: forever).
_REMEMBERED_MAX = 256


def _remember(table: Dict[Any, Any], key: Any, value: Any) -> Any:
    """``table[key] = value``, emptying ``table`` first when it is full;
    returns ``value``."""
    if len(table) >= _REMEMBERED_MAX:
        table.clear()
    table[key] = value
    return value


def array_pieces(item: Any, kind: type) -> Optional[Pieces]:
    """The pieces of ``item``'s message if it is a C-contiguous numpy
    array (exactly ``ndarray``) of a built-in dtype, else None.

    Such an array pickles (protocol 5) as ``_frombuffer(<buffer>, dtype,
    shape, 'C')`` with its data out of band (read-only if the array is):
    the pickle depends on the dtype, the shape and the writability alone.
    So the message's prefix (header, pickle, padding) is made by pickling
    the first array of each kind, and reused: a 1 MiB array's pieces cost
    ~1.5 us instead of ~12 (pickling ~6.6, ``Pieces`` ~5.8). Tests check
    that the messages are byte for byte what the generic path makes."""
    global _ndarray
    if kind is not _ndarray:
        if _ndarray is not None:
            return None
        numpy = sys.modules.get("numpy")
        if numpy is None or kind is not numpy.ndarray:
            return None
        _ndarray = kind
    dtype = item.dtype
    flags = item.flags
    if not flags.c_contiguous or dtype.isbuiltin != 1 or dtype.hasobject or not item.nbytes:
        return None
    key = (dtype, item.shape, flags.writeable)
    known = _ARRAY_PREFIXES.get(key)
    if known is None:
        buffers: List[pickle.PickleBuffer] = []
        data = pickle.dumps(item, PROTOCOL, buffer_callback=buffers.append)
        if len(buffers) != 1 or buffers[0].raw().nbytes != item.nbytes:
            return None  # not the layout above: the generic path
        prefix = _header(len(data), [item.nbytes]) + data
        prefix += _PADDING[: -len(prefix) % ALIGN]
        if len(prefix) + item.nbytes >= 1 << 32:
            # Its lengths would not fit the C call's 32-bit array: the
            # generic path refuses it (MessageTooLargeError).
            return None
        lengths = (c_uint32 * 2)(len(prefix), item.nbytes)
        known = _remember(_ARRAY_PREFIXES, key, (prefix, len(data), lengths, _bytes_address(prefix)))
    return Pieces.of_array(known[0], known[1], item, known[2])


def arrays_nbytes(items: List[Any], kinds: Set[type]) -> Optional[int]:
    """If every one of ``items`` (whose types are ``kinds``) is exactly a
    numpy ndarray whose dtype holds no Python objects (so that pickling it
    cannot fail), their bytes together; otherwise None."""
    numpy = sys.modules.get("numpy")
    if numpy is None or kinds != {numpy.ndarray}:
        return None
    total = 0
    for item in items:
        if item.dtype.hasobject:
            return None
        total += item.nbytes
    return total


def array_vectors(item: Any, kind: type) -> Optional[Tuple[Any, Any, Any, Any]]:
    """``put``'s shortest path for a writable C-contiguous array of a kind
    ``array_pieces`` has seen (its dtype, shape and writability): the
    arguments of ``ring_buffer_put_msgv`` without a ``Pieces`` (~1.7 us
    less per put of a 1 MiB array, about 5 %). Returns (holder, addresses,
    lengths, entry): the holder, a ctypes object over the array's first
    byte, keeps the array's memory exported, and the table's entry its
    prefix (which the table may drop meanwhile), until the caller drops
    them after the call. None: use ``array_pieces``."""
    if kind is not _ndarray:
        return None  # numpy not seen yet (array_pieces finds it), or no array
    try:
        # Only a writable C-contiguous array exports a simple writable
        # buffer: this is also the test of both.
        holder = _c_char.from_buffer(item)
    except (TypeError, ValueError, BufferError):
        return None
    known = _ARRAY_PREFIXES.get((item.dtype, item.shape, True))
    if known is None:
        return None
    # The dtype and shape made the entry, so they passed array_pieces'
    # checks (built-in dtype, no objects, not empty, under 4 GiB in all).
    return holder, _ADDRESS_PAIR(known[3], _addressof(holder)), known[2], known


#: ``array_vectors``' address array type (made once: ~0.35 us a call).
_ADDRESS_PAIR = c_void_p * 2


def release_all(payloads: Sequence[Any]) -> None:
    """Releases the ``Pieces`` among ``payloads`` (the buffers they hold)."""
    for p in payloads:
        if type(p) is Pieces:
            p.release()


class _Sink:
    """A file for ``pickle.Pickler`` that keeps every chunk written to it as
    it is (``write`` is a list's ``append``)."""

    __slots__ = ("write",)

    write: Callable[[bytes], None]


def dumps_large(item: Any) -> Pieces:
    """``item`` pickled for a message of pieces, without copying its large
    parts: pickling into a file, the C pickler hands every ``bytes`` payload
    of 64 KiB or more (a bytes object, as it is; the UTF-8 of a
    str) to the file's ``write`` instead of copying it into its own growing
    output, and out-of-band buffers (numpy arrays, PickleBuffer) go to
    ``buffer_callback``. The message is those chunks back to back (put_msgv
    writes each once into shared memory): a plain pickle, read with
    ``pickle.loads``, or the out-of-band layout if there are buffers.
    (``pickle.dumps`` of a 1 MiB bytes takes ~0.8 ms here, this ~1 us.)"""
    chunks: List[bytes] = []
    buffers: List[pickle.PickleBuffer] = []
    sink = _Sink()
    sink.write = chunks.append
    pickle.Pickler(sink, PROTOCOL, buffer_callback=buffers.append).dump(item)
    return Pieces(chunks, buffers)


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
    if count != 1:
        return pickle.loads(data, buffers=buffers)
    key = bytes(data)
    layout = _ARRAY_LAYOUTS.get(key)
    if layout:
        # What numpy's _frombuffer does with these arguments (see
        # array_layout).
        frombuffer, dtype, shape, readonly = layout
        buffer = buffers[0]
        return frombuffer(memoryview(buffer).toreadonly() if readonly else buffer, dtype).reshape(shape)
    item = pickle.loads(data, buffers=buffers)
    if layout is None:  # a pickle not seen yet
        _remember(_ARRAY_LAYOUTS, key, array_layout(item, key) or False)
    return item


#: How to rebuild the arrays of the pickles seen (see array_layout); False
#: for pickles that are not so rebuilt (each is looked at once).
_ARRAY_LAYOUTS: Dict[bytes, Any] = {}

#: ``loads_lent``'s table: the prefix (header, pickle, padding) of a
#: one-buffer message -> how to rebuild its array (as ``_ARRAY_LAYOUTS``).
_LENT_LAYOUTS: Dict[bytes, Any] = {}

#: The header of a one-buffer message, with its buffer's length.
_HEAD_ONE = struct.Struct("<4sIQQ")


def loads_lent(payload: memoryview) -> Any:
    """The item of a message lent where it lies (``lent``: its memory is this
    item's alone), as ``loads_any`` reads it. An array of a kind seen before
    (a one-buffer message whose prefix, the header and pickle, is byte for
    byte one ``array_layout`` rebuilt) is rebuilt on its bytes without
    parsing the header again: ~1 us less of a 64 KiB array's ~7 us get
    (measured)."""
    if len(payload) < _HEAD_ONE.size:
        return loads(payload, True) if has_magic(payload) else pickle.loads(payload)
    magic, count, pickle_len, size = _HEAD_ONE.unpack_from(payload)
    if magic != MAGIC:
        return pickle.loads(payload)
    if count != 1:
        return loads(payload, True)
    at = _HEAD_ONE.size + pickle_len
    at += -at % ALIGN
    prefix = bytes(payload[:at])
    layout = _LENT_LAYOUTS.get(prefix)
    if layout is None:
        item = loads(payload, True)
        # The message is the prefix and the array's bytes, nothing else.
        known = _ARRAY_LAYOUTS.get(bytes(payload[_HEAD_ONE.size : _HEAD_ONE.size + pickle_len]))
        if known and at + size == len(payload):
            _remember(_LENT_LAYOUTS, prefix, known)
        return item
    frombuffer, dtype, shape, readonly = layout
    buffer = payload[at : at + size]
    return frombuffer(buffer.toreadonly() if readonly else buffer, dtype).reshape(shape)


def _out_of_band(_: pickle.PickleBuffer) -> bool:
    return False


def array_layout(item: Any, pickled: bytes) -> Optional[Tuple[Callable[..., Any], Any, Tuple[int, ...], bool]]:
    """If ``pickled`` (the pickle of a one-buffer message) is what numpy
    makes for ``item``, the C-contiguous array it unpickled to (see
    ``array_pieces``): numpy's ``frombuffer``, the
    dtype, the shape and whether it is read-only. The pickle of such an
    array is ``_frombuffer(<buffer>, dtype, shape, 'C')``, which is
    ``frombuffer(buffer, dtype).reshape(shape)``: the consumer's next
    arrays of the same pickle are built so, ~2 us instead of unpickling's
    ~3-5. Checked by pickling ``item`` again: only a pickle that is byte
    for byte numpy's pickle of such an array is remembered."""
    numpy = sys.modules.get("numpy")
    if numpy is None or type(item) is not numpy.ndarray:
        return None
    # (Its dtype is not the built-in object: unpickling makes a copy. The
    # arrays rebuilt share it: not for structured dtypes, whose field
    # names can be changed.)
    dtype = item.dtype
    if not item.flags.c_contiguous or dtype.hasobject or dtype.names is not None or not item.nbytes:
        return None
    if pickle.dumps(item, PROTOCOL, buffer_callback=_out_of_band) != pickled:
        return None
    return numpy.frombuffer, dtype, item.shape, not item.flags.writeable


def has_magic(payload: memoryview) -> bool:
    """Whether ``payload`` starts as an out-of-band message does (0xff is no
    pickle opcode: no pickle starts so)."""
    return bytes(payload[:_MAGIC_LEN]) == MAGIC


_MAGIC_LEN = len(MAGIC)


def loads_any(payload: memoryview) -> Any:
    """Unpickles a message that may carry out-of-band buffers (see _oob);
    its buffers are used in place when ``payload`` maps the item's own side
    object, copied otherwise. (The magic first: 0xff is no pickle opcode,
    and a failed ``pickle.loads`` costs ~1.5 us.)"""
    if isinstance(payload.obj, _Lent):
        return loads_lent(payload)
    if has_magic(payload):
        return loads(payload, owned=False)
    return pickle.loads(payload)


class _Lent:
    """Base of the block types ``lent`` makes (for ``isinstance``)."""

    __slots__ = ()


def _end_lease(block: Any) -> None:
    """``__del__`` of a lent block: gives its lease back (once the last
    view of it is gone)."""
    lease = getattr(block, "lease", 0)
    if lease:
        block.lease = 0
        try:
            _lib.lease_release(lease)
        except Exception:  # interpreter shutdown: the process is ending anyway
            pass


#: Block types by capacity (powers of two: a bounded set, as ctypes keeps
#: every array type it makes).
_BLOCK_TYPES: Dict[int, type] = {}


#: The block type of each message length met lately (a stream's items are
#: mostly of one length: ~0.15 us less than working the type out).
_BLOCK_FOR_LENGTH: Dict[int, Any] = {}


def _block_type(capacity: int) -> Any:
    block = _BLOCK_TYPES.get(capacity)
    if block is None:
        block = type(
            f"_LentBlock{capacity}",
            (ctypes.c_char * capacity, _Lent),
            {"__slots__": ("lease",), "__del__": _end_lease},
        )
        _BLOCK_TYPES[capacity] = block
    return block


def received_in_place(obj: Any) -> bool:
    """Whether ``obj`` (a numpy array, a memoryview, ...) was received
    without a copy: its memory is shared memory a queue lent it (an item
    that went out of line: larger than the ring, or of 64 KiB or more, see
    ``SageQueue``), given back when the last object using it is gone."""
    base: Any = obj
    while getattr(base, "base", None) is not None and not isinstance(base, memoryview):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, _Lent)


def lent(address: int, length: int, lease: int) -> memoryview:
    """A view of ``length`` bytes at ``address`` that ``lease`` (from
    ``ring_buffer_get_msg_lease``) lends: the view, and every view and array
    made from it, hold a block object whose end gives the lease back. Owned
    by the receiving thread alone: writable, and nobody else writes it."""
    kind = _BLOCK_FOR_LENGTH.get(length)
    if kind is None:
        kind = _remember(_BLOCK_FOR_LENGTH, length, _block_type(1 << max(length - 1, 0).bit_length()))
    block = kind.from_address(address)
    block.lease = lease
    # Only the first `length` bytes are the message (and mapped): the
    # block's type is the next power of two, and nothing reads beyond.
    return memoryview(block).cast("B")[:length]
