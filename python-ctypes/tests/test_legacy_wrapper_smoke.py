"""The legacy SAGE ctypes wrapper's view of the library, unchanged.

Existing SAGE code loads ``ring_buffer.so`` with ``ctypes.CDLL`` and declares
the functions exactly as below (names ``c_char_p``, sizes ``c_uint32``, data
``c_void_p``, handles ``POINTER(RingBufferStruct)`` where RingBufferStruct is
the wrapper's own struct, which leaves out the pthread mutex and therefore is
only ever read up to ``process_count``). This file proves that this library,
dropped in for the legacy one, works for such a caller: the calls, the structs
it reads, and 10,000 pickled objects streamed between two processes with the
legacy framing (``write(4 + L)`` of ``struct.pack('<I', L) + payload``;
``peek(4)`` then ``read(4 + L)``).

It deliberately does not import ``sage_queue``: it stands for the old wrapper.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pickle
import secrets
import struct
import time
from ctypes import POINTER, Structure, c_bool, c_char, c_char_p, c_int, c_uint32, c_uint64, c_void_p
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LIB_PATH = os.environ.get("RING_BUFFER_LIB") or str(REPO_ROOT / "build" / "libring_buffer.so")

RING_BUFFER_MAGIC = 0x53414745424C4B52
N_OBJECTS = 10_000
RING_BYTES = 64 * 1024  # the legacy wrapper's default maxsize
DEADLINE_S = 90.0  # watchdog for the whole stream; it takes a few seconds


# The legacy wrapper's structs, field for field.
class RingBufferStruct(Structure):
    _fields_ = [
        ("magic", c_uint64),
        ("version", c_uint32),
        ("buffer_size", c_uint32),
        ("head", c_uint64),
        ("tail", c_uint64),
        ("readers", c_uint32),
        ("writers", c_uint32),
        ("ref_count", c_uint32),
        ("process_count", c_uint32),
        # (the wrapper skipped the pthread_mutex_t here)
        ("name", c_char * 64),
        ("creator_pid", c_int),
        ("total_bytes_written", c_uint64),
        ("total_bytes_read", c_uint64),
        ("padding", c_char * 24),
    ]


class RingBufferRef(Structure):
    _fields_ = [
        ("name", c_char * 64),
        ("size", c_uint32),
        ("auto_cleanup", c_bool),
        ("creator_pid", c_int),
    ]


class RingBufferStats(Structure):
    _fields_ = [
        ("buffer_size", c_uint32),
        ("available_read", c_uint32),
        ("available_write", c_uint32),
        ("readers", c_uint32),
        ("writers", c_uint32),
        ("ref_count", c_uint32),
        ("total_bytes_written", c_uint64),
        ("total_bytes_read", c_uint64),
        ("utilization", ctypes.c_double),
    ]


def load_legacy_lib() -> ctypes.CDLL:
    """The library with the legacy wrapper's declarations (its
    ``_setup_function_signatures``, with ``ring_buffer_create`` taking the
    name and size of docs/legacy-abi.md)."""
    lib = ctypes.CDLL(LIB_PATH)
    RB = POINTER(RingBufferStruct)
    decl = {
        "ring_buffer_create": ([c_char_p, c_uint32], RB),
        "ring_buffer_open": ([c_char_p], RB),
        "ring_buffer_close": ([RB], None),
        "ring_buffer_destroy": ([c_char_p], None),
        "ring_buffer_write": ([RB, c_void_p, c_uint32], c_int),
        "ring_buffer_read": ([RB, c_void_p, c_uint32], c_int),
        "ring_buffer_peek": ([RB, c_void_p, c_uint32], c_int),
        "ring_buffer_available_read": ([RB], c_uint32),
        "ring_buffer_available_write": ([RB], c_uint32),
        "ring_buffer_is_empty": ([RB], c_bool),
        "ring_buffer_is_full": ([RB], c_bool),
        "ring_buffer_get_ref": ([RB], POINTER(RingBufferRef)),
        "ring_buffer_from_ref": ([POINTER(RingBufferRef)], RB),
        "ring_buffer_release_ref": ([POINTER(RingBufferRef)], None),
        "ring_buffer_inc_ref": ([RB], c_int),
        "ring_buffer_dec_ref": ([RB], c_int),
        "ring_buffer_get_stats": ([RB, POINTER(RingBufferStats)], None),
        "ring_buffer_reset_stats": ([RB], None),
    }
    for fname, (argtypes, restype) in decl.items():
        fn = getattr(lib, fname)
        fn.argtypes = argtypes
        fn.restype = restype
    return lib


@pytest.fixture
def lib() -> ctypes.CDLL:
    return load_legacy_lib()


@pytest.fixture
def queue_name() -> str:
    # Unique per run; removed by the tests' finally blocks.
    return f"pylegacy_{os.getpid()}_{secrets.token_hex(3)}"


def shm_path(name: str) -> Path:
    return Path("/dev/shm") / f"sage_ringbuf_{name}"


def make_obj(i: int) -> Any:
    """Object number i: varied types and sizes, deterministic, comparable
    with == (no NaN), so the reader can rebuild what it must receive."""
    k = i % 10
    if k == 0:
        return i * 7919 - 5_000_000
    if k == 1:
        return ("é-ü-漢字-" + str(i)) * (i % 13)  # empty now and then
    if k == 2:
        n = (i * 37) % 4000
        return bytes(((i * 31 + j) & 0xFF) for j in range(n))
    if k == 3:
        return {"id": i, "name": f"item{i}", "tags": [i % 3, i % 5], "score": i / 4}
    if k == 4:
        return [i, -i, i * 0.5, None, True, False, (i, str(i))]
    if k == 5:
        return (i, 2 ** (i % 300), -(3 ** (i % 60)))
    if k == 6:
        return None if i % 20 == 6 else frozenset(range(i % 17))
    if k == 7:
        return bytearray(b"x" * ((i * 101) % 20_000))  # up to ~20 KB
    if k == 8:
        return {str(j): [j] * (j % 4) for j in range(i % 40)}
    return 1.0 / (i + 1)


def frame(obj: Any) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("<I", len(payload)) + payload


def test_structs_and_header_as_the_wrapper_reads_them(lib: ctypes.CDLL, queue_name: str) -> None:
    assert ctypes.sizeof(RingBufferRef) == 76
    assert ctypes.sizeof(RingBufferStats) == 48
    name = queue_name.encode()
    rb = lib.ring_buffer_create(name, 5000)
    try:
        assert rb, "ring_buffer_create returned NULL"
        h = rb.contents  # fields up to process_count sit where the wrapper expects
        assert h.magic == RING_BUFFER_MAGIC
        assert h.version == 2
        assert h.buffer_size == 8192
        assert (h.head, h.tail, h.readers, h.writers) == (0, 0, 0, 0)
        assert h.ref_count == 1
        assert h.process_count == 1
        assert oct(shm_path(queue_name).stat().st_mode & 0o777) == oct(0o600)

        assert lib.ring_buffer_is_empty(rb) is True
        assert lib.ring_buffer_is_full(rb) is False
        assert lib.ring_buffer_available_write(rb) == 8191
        data = frame({"hello": "world"})
        # The wrapper passed its bytes as ctypes.c_char_p(...) for a c_void_p.
        assert lib.ring_buffer_write(rb, ctypes.c_char_p(data), len(data)) == len(data)
        assert lib.ring_buffer_available_read(rb) == len(data)
        assert rb.contents.tail == len(data)
        hdr = ctypes.create_string_buffer(4)
        assert lib.ring_buffer_peek(rb, hdr, 4) == 4
        (length,) = struct.unpack("<I", hdr.raw)
        assert length == len(data) - 4
        buf = ctypes.create_string_buffer(4 + length)
        assert lib.ring_buffer_read(rb, buf, 4 + length) == 4 + length
        assert pickle.loads(buf.raw[4:]) == {"hello": "world"}
        # Reading more than queued fails the legacy way.
        assert lib.ring_buffer_read(rb, buf, 1) == -1
        assert lib.ring_buffer_is_empty(rb) is True

        stats = RingBufferStats()
        lib.ring_buffer_get_stats(rb, ctypes.byref(stats))
        assert stats.buffer_size == 8192
        assert stats.total_bytes_written == len(data)
        assert stats.total_bytes_read == len(data)
        assert stats.available_read == 0
        assert stats.utilization == 0.0
        lib.ring_buffer_reset_stats(rb)
        lib.ring_buffer_get_stats(rb, ctypes.byref(stats))
        assert (stats.total_bytes_written, stats.total_bytes_read) == (0, 0)

        ref = lib.ring_buffer_get_ref(rb)
        assert ref
        r = ref.contents
        assert r.name.decode() == queue_name
        assert r.size == 8192
        assert r.auto_cleanup is False
        assert r.creator_pid == os.getpid()
        assert rb.contents.ref_count == 2
        rb2 = lib.ring_buffer_from_ref(ref)
        assert rb2
        assert rb.contents.ref_count == 3
        assert rb.contents.process_count == 2
        lib.ring_buffer_release_ref(ref)
        lib.ring_buffer_close(rb2)
        assert lib.ring_buffer_inc_ref(rb) == 4
        assert lib.ring_buffer_dec_ref(rb) == 3
        assert rb.contents.process_count == 1
        # A second attach by name, as the wrapper did in other processes.
        rb3 = lib.ring_buffer_open(name)
        assert rb3 and rb3.contents.buffer_size == 8192
        lib.ring_buffer_close(rb3)
        assert not lib.ring_buffer_open(b"pylegacy_missing_" + secrets.token_hex(4).encode())
    finally:
        if rb:
            lib.ring_buffer_close(rb)
        lib.ring_buffer_destroy(name)
    assert not shm_path(queue_name).exists()


def _producer(name: bytes, count: int) -> None:
    """Child: the legacy wrapper's put(), count times. Exit code says why
    it failed, if it did."""
    lib = load_legacy_lib()
    rb = lib.ring_buffer_open(name)
    if not rb:
        os._exit(3)
    deadline = time.monotonic() + DEADLINE_S
    for i in range(count):
        data = frame(make_obj(i))
        while True:
            # The wrapper checked the free space first, then wrote.
            if lib.ring_buffer_available_write(rb) >= len(data):
                rc = lib.ring_buffer_write(rb, ctypes.c_char_p(data), len(data))
                if rc == len(data):
                    break
                if rc != -1:
                    os._exit(4)
            if time.monotonic() > deadline:
                os._exit(5)
            time.sleep(0.0002)
    lib.ring_buffer_close(rb)
    os._exit(0)


def test_10000_pickles_between_two_processes(lib: ctypes.CDLL, queue_name: str) -> None:
    name = queue_name.encode()
    ctx = multiprocessing.get_context("fork")
    rb = lib.ring_buffer_create(name, RING_BYTES)
    proc = None
    try:
        assert rb, "ring_buffer_create returned NULL"
        assert rb.contents.buffer_size == RING_BYTES
        proc = ctx.Process(target=_producer, args=(name, N_OBJECTS), daemon=True)
        proc.start()

        hdr = ctypes.create_string_buffer(4)
        buf = ctypes.create_string_buffer(64 * 1024)
        deadline = time.monotonic() + DEADLINE_S
        total = 0
        for i in range(N_OBJECTS):
            # The legacy get(): peek the length, then read prefix + payload.
            while lib.ring_buffer_peek(rb, hdr, 4) != 4:
                if time.monotonic() > deadline:
                    pytest.fail(f"watchdog: object {i} never arrived (producer exit {proc.exitcode})")
                if not proc.is_alive() and proc.exitcode != 0:
                    pytest.fail(f"producer died with exit code {proc.exitcode} before object {i}")
                time.sleep(0.0002)
            (length,) = struct.unpack("<I", hdr.raw)
            assert 4 + length <= len(buf), f"object {i}: absurd length {length}"
            # A write is all or nothing: once its prefix shows, all of it does.
            assert lib.ring_buffer_read(rb, buf, 4 + length) == 4 + length, f"object {i}"
            got = pickle.loads(buf.raw[4 : 4 + length])
            want = make_obj(i)
            assert type(got) is type(want), f"object {i}: {type(got)} != {type(want)}"
            assert got == want, f"object {i} differs"
            total += 4 + length

        proc.join(timeout=DEADLINE_S)
        assert proc.exitcode == 0
        assert lib.ring_buffer_is_empty(rb) is True
        stats = RingBufferStats()
        lib.ring_buffer_get_stats(rb, ctypes.byref(stats))
        assert stats.total_bytes_written == total
        assert stats.total_bytes_read == total
        assert total > 20 * RING_BYTES  # the ring wrapped many times
        assert rb.contents.head == rb.contents.tail == total
    finally:
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(timeout=10)
        if rb:
            lib.ring_buffer_close(rb)
        lib.ring_buffer_destroy(name)
    assert not shm_path(queue_name).exists()
