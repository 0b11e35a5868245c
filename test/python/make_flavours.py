"""Writes HDF5 files in every flavour the shard index must read (or hand to
h5wasm), with h5py, then prints a JSON manifest: for each file, each root
dataset's name and sha256 of `f[name][()].tobytes()` as h5py reads it.

usage: make_flavours.py OUT_DIR [FLAVOUR ...]   (no FLAVOUR: all of them)

Some flavours need file-creation properties h5py does not expose (group
B-tree ranks, shared object header messages); those are set on h5py's
property list through libhdf5 itself (ctypes), the same library h5py uses.
"""
import ctypes
import hashlib
import json
import os
import sys

import h5py
import numpy as np

out = sys.argv[1]
wanted = set(sys.argv[2:])
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)

_libhdf5 = None


def libhdf5():
    """The libhdf5 h5py is linked against (ctypes finds the loaded copy by its soname)."""
    global _libhdf5
    if _libhdf5 is None:
        for soname in ("libhdf5_serial.so.103", "libhdf5.so.103", "libhdf5_serial.so", "libhdf5.so"):
            try:
                _libhdf5 = ctypes.CDLL(soname)
                break
            except OSError:
                continue
        else:
            raise RuntimeError("libhdf5 not found for ctypes")
    return _libhdf5


def call(fn, *args):
    if fn(*args) < 0:
        raise RuntimeError(f"{fn.__name__} failed")


def payload(n):
    return rng.integers(0, 256, size=n, dtype=np.uint8)


def chunk_names(count):
    side = int(np.ceil(np.sqrt(count))) or 1
    return [f"{i // side}.{i % side}" for i in range(count)]


def fill(f, count, size, opaque=False, **kw):
    for name in chunk_names(count):
        data = payload(size if size is not None else int(rng.integers(0, 3000)))
        if opaque:
            f.create_dataset(name, data=np.void(data.tobytes()))
        else:
            f.create_dataset(name, data=data, **kw)


LIBVER = {"earliest": h5py.h5f.LIBVER_EARLIEST, "v108": h5py.h5f.LIBVER_V18, "v110": h5py.h5f.LIBVER_V110, "latest": h5py.h5f.LIBVER_LATEST}


def low_level_file(path, libver, userblock, sizes, sym_k, sohm):
    """A new file made through h5f.create, for creation properties h5py.File does not take."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    if userblock:
        fcpl.set_userblock(userblock)
    if sizes:
        fcpl.set_sizes(*sizes)
    lib = libhdf5()
    pid = ctypes.c_int64(fcpl.id)
    if sym_k:
        call(lib.H5Pset_sym_k, pid, ctypes.c_uint(sym_k[0]), ctypes.c_uint(sym_k[1]))
    if sohm:
        # One index for every kind of shareable message, sharing messages of any size.
        call(lib.H5Pset_shared_mesg_nindexes, pid, ctypes.c_uint(1))
        call(lib.H5Pset_shared_mesg_index, pid, ctypes.c_uint(0), ctypes.c_uint(0xFF), ctypes.c_uint(1))
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    if libver:
        low, high = (libver, libver) if isinstance(libver, str) else libver
        fapl.set_libver_bounds(LIBVER[low], LIBVER["latest" if high == "latest" else high])
    fid = h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)
    return h5py.File(fid)


flavours = {}


def flavour(name, libver=None, userblock=None, track_order=None, sizes=None, sym_k=None, sohm=False, edit=None, **file_kw):
    """Registers fn(f) as the writer of NAME.h5; `edit(f)` then runs on the closed file reopened by h5py in 'a' mode."""

    def wrap(fn):
        if wanted and name not in wanted:
            return fn
        path = os.path.join(out, name + ".h5")
        if sizes or sym_k or sohm:
            f = low_level_file(path, libver, userblock, sizes, sym_k, sohm)
        else:
            kw = dict(file_kw)
            if libver:
                kw["libver"] = libver
            if userblock:
                kw["userblock_size"] = userblock
            if track_order is not None:
                kw["track_order"] = track_order
            f = h5py.File(path, "w", **kw)
        with f:
            fn(f)
        if edit:
            with h5py.File(path, "a") as f:
                edit(f)
        flavours[name] = path
        return fn

    return wrap


@flavour("earliest-small")
def _(f):
    fill(f, 5, 100)


@flavour("earliest-opaque")
def _(f):
    fill(f, 20, None, opaque=True)


@flavour("earliest-deep")
def _(f):
    fill(f, 1500, 16)  # v1 B-tree of several levels


@flavour("earliest-sym-k2", sym_k=(2, 2))
def _(f):
    # Group B-tree nodes of at most 4 children and symbol nodes of at most 4
    # entries: a small old-style group that is still several levels deep.
    fill(f, 60, 24)


@flavour("earliest-offsets4", sizes=(4, 4))
def _(f):
    fill(f, 30, 40)


@flavour("earliest-offsets8-lengths4", sizes=(8, 4))
def _(f):
    # Symbol table entries and heap offsets are lengths, addresses are offsets: different widths here.
    fill(f, 30, 40)
    f["soft"] = h5py.SoftLink("/0.0")


@flavour("earliest-offsets4-lengths8", sizes=(4, 8))
def _(f):
    fill(f, 30, 40)
    f["soft"] = h5py.SoftLink("/0.0")


@flavour("latest-offsets4", libver="latest", sizes=(4, 4))
def _(f):
    fill(f, 60, 40)


@flavour("v108-compact-links", libver=("v108", "v110"))
def _(f):
    fill(f, 6, 500)


@flavour("v108-dense", libver=("v108", "v110"))
def _(f):
    fill(f, 300, None)


@flavour("latest-dense-1200", libver="latest")
def _(f):
    fill(f, 1200, 32)


@flavour("latest-dense-200", libver="latest")
def _(f):
    # Enough links for a v2 B-tree of two levels and a fractal heap with an indirect block, in a small file.
    fill(f, 200, 8)


@flavour("latest-opaque", libver="latest")
def _(f):
    fill(f, 40, None, opaque=True)


@flavour("track-order", track_order=True)
def _(f):
    fill(f, 200, 64)


@flavour("track-order-latest", libver="latest", track_order=True)
def _(f):
    fill(f, 50, 64)


@flavour("userblock", userblock=512)
def _(f):
    fill(f, 30, 200)


@flavour("userblock-latest", libver="latest", userblock=4096)
def _(f):
    fill(f, 30, 200)


@flavour("userblock-offsets4", userblock=1024, sizes=(4, 4))
def _(f):
    fill(f, 10, 50)


@flavour("chunked-gzip")
def _(f):
    fill(f, 4, 5000, chunks=(1000,), compression="gzip")
    fill_plain = payload(100)
    f.create_dataset("plain", data=fill_plain)


@flavour("chunked-plain", libver="latest")
def _(f):
    f.create_dataset("chunked", data=payload(5000), chunks=(1000,))
    f.create_dataset("chunked-one", data=payload(100), chunks=(100,))
    f.create_dataset("fletcher32", data=payload(300), chunks=(100,), fletcher32=True)
    f.create_dataset("shuffle-gzip", data=payload(300), chunks=(100,), shuffle=True, compression="gzip")
    f.create_dataset("resizable", data=payload(50), maxshape=(None,))
    f.create_dataset("plain", data=payload(100))


def write_compact(f, count):
    for name in chunk_names(count):
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        data = payload(int(rng.integers(1, 2000)))
        space = h5py.h5s.create_simple(data.shape)
        ds = h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_UINT8, space, dcpl=dcpl)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, data)


@flavour("compact-layout", libver="latest")
def _(f):
    write_compact(f, 10)


@flavour("compact-layout-earliest")
def _(f):
    write_compact(f, 6)
    f.create_dataset("contiguous", data=payload(64))


@flavour("attrs-subgroups", libver=("v108", "v110"))
def _(f):
    f.attrs["note"] = "root attribute"
    f.attrs["big"] = np.arange(5000)
    fill(f, 12, 300)
    g = f.create_group("sub")
    g.create_dataset("inner", data=payload(10))
    f["sub2/deeper"] = payload(5)
    f["soft"] = h5py.SoftLink("/0.0")
    for name in list(f.keys())[:3]:
        if isinstance(f[name], h5py.Dataset):
            f[name].attrs["x"] = 1


@flavour("attrs-subgroups-earliest")
def _(f):
    f.attrs["note"] = "root attribute"
    f.attrs["big"] = np.arange(2000)
    fill(f, 12, 300)
    f.create_group("sub").create_dataset("inner", data=payload(10))
    f["sub2/deeper"] = payload(5)


@flavour("dense-root-attrs", libver="latest")
def _(f):
    # More attributes than fit in the header: dense attribute storage (its own fractal heap and v2 B-tree).
    for i in range(40):
        f.attrs[f"attr{i}"] = np.arange(i + 1)
    fill(f, 20, 30)
    f["0.0"].attrs.update({f"a{i}": i for i in range(20)})


def links(f, dense, external=True):
    fill(f, 12 if dense else 3, 40)
    f["alias"] = f["0.0"]  # a second hard link to one dataset
    f["soft"] = h5py.SoftLink("/0.1")
    f["dangling"] = h5py.SoftLink("/nowhere")
    if external:
        f["external"] = h5py.ExternalLink("missing-file.h5", "/x")
    f.create_group("group").create_dataset("inside", data=payload(8))
    f["softgroup"] = h5py.SoftLink("/group")
    f["named-type"] = np.dtype("u1")
    f.create_dataset("uses-named-type", data=payload(16), dtype=f["named-type"])
    f.create_dataset("ünïcødé 名前", data=payload(12))
    f.create_dataset("name with spaces", data=payload(12))
    f.create_dataset("n" * 300, data=payload(12))


@flavour("earliest-links")
def _(f):
    # Soft links stay symbol table entries (cache type 2) in an old-style group.
    links(f, dense=False, external=False)


@flavour("earliest-external-link")
def _(f):
    # An external link cannot be a symbol table entry: HDF5 turns the group into a new-style one.
    links(f, dense=False)


@flavour("latest-links-dense", libver="latest")
def _(f):
    links(f, dense=True)


@flavour("latest-links-compact", libver="latest")
def _(f):
    f.create_dataset("0.0", data=payload(20))
    f["alias"] = f["0.0"]
    f["soft"] = h5py.SoftLink("/0.0")
    f["external"] = h5py.ExternalLink("missing-file.h5", "/x")
    f.create_dataset("ünïcødé", data=payload(7))


@flavour("huge-link-name", libver="latest")
def _(f):
    # A link message too large for the heap's managed objects is a "huge" heap object (not decoded: h5wasm).
    fill(f, 10, 3)
    f.create_dataset("x" * 70000, data=payload(3))


@flavour("dtypes", libver=("v108", "v110"))
def _(f):
    f.create_dataset("uint8", data=payload(40))
    f.create_dataset("int8", data=payload(40).view(np.int8))
    f.create_dataset("uint16", data=np.arange(20, dtype="<u2"))
    f.create_dataset("uint16-be", data=np.arange(20, dtype=">u2"))
    f.create_dataset("float32-2d", data=np.ones((3, 4), dtype="<f4"))
    f.create_dataset("uint8-2d", data=payload(16).reshape(4, 4))
    f.create_dataset("uint8-scalar", data=np.uint8(9))
    f.create_dataset("opaque-tagged", data=np.void(b"tagged bytes"))
    f.create_dataset("fixed-string", data=np.bytes_(b"twelve bytes"))
    f.create_dataset("vlen-string", data="variable length", dtype=h5py.string_dtype())
    f.create_dataset("null-space", data=h5py.Empty("u1"))
    f.create_dataset("compound", data=np.zeros(3, dtype=[("a", "u1"), ("b", "<i4")]))
    f.create_dataset("bool", data=np.array([True, False, True]))


@flavour("alloc-and-fill", libver=("v108", "v110"))
def _(f):
    for name, alloc, fill_time, value in [
        ("early-fill-3", h5py.h5d.ALLOC_TIME_EARLY, h5py.h5d.FILL_TIME_ALLOC, 3),
        ("early-never-filled", h5py.h5d.ALLOC_TIME_EARLY, h5py.h5d.FILL_TIME_NEVER, 0),
        ("late-unwritten-7", h5py.h5d.ALLOC_TIME_LATE, h5py.h5d.FILL_TIME_IFSET, 7),
    ]:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(alloc)
        dcpl.set_fill_time(fill_time)
        dcpl.set_fill_value(np.array(value, dtype=np.uint8))
        h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_UINT8, h5py.h5s.create_simple((64,)), dcpl=dcpl)
    f.create_dataset("partly-written", shape=(50,), dtype=np.uint8, fillvalue=5)[10:20] = 1
    f.create_dataset("empty", data=np.zeros(0, dtype=np.uint8))


@flavour("empty-and-zero")
def _(f):
    f.create_dataset("0.0", data=np.zeros(0, dtype=np.uint8))
    f.create_dataset("0.1", shape=(100,), dtype=np.uint8)  # never written: fill value
    f.create_dataset("0.2", data=payload(10))


@flavour("empty-group")
def _(f):
    pass


@flavour("empty-group-latest", libver="latest")
def _(f):
    pass


@flavour("sohm", libver="latest", sohm=True)
def _(f):
    # Shared object header messages: datatype and dataspace live in a shared-message heap (not decoded: h5wasm).
    fill(f, 20, 10)


@flavour("page-strategy", libver="latest", fs_strategy="page", fs_persist=True, fs_page_size=4096)
def _(f):
    # Paged file space with persistent free space: a superblock extension.
    fill(f, 20, 300)


def add_attributes(f, names, count):
    for name in names:
        for i in range(count):
            f[name].attrs[f"attribute-{i}"] = np.arange(8 * i + 1)


@flavour("v1-continuations")
def _(f):
    # Attributes added after creation do not fit the first header block: v1 continuation blocks.
    fill(f, 20, 48)
    add_attributes(f, chunk_names(20)[::2], 6)
    for i in range(30):
        f.attrs[f"root-{i}"] = np.arange(i + 10)


@flavour("v2-continuations", libver="latest")
def _(f):
    fill(f, 20, 48)
    add_attributes(f, chunk_names(20)[::2], 6)
    for i in range(6):
        f.attrs[f"root-{i}"] = np.arange(i + 10)


def edit_in_place(f):
    names = sorted(n for n in f.keys() if isinstance(f.get(n), h5py.Dataset))
    for name in names[::3]:
        size = f[name].size
        del f[name]
        f.create_dataset(name, data=payload(size))  # same size: may reuse the freed space
    for name in names[1::4]:
        del f[name]
        f.create_dataset(name, data=payload(int(rng.integers(1, 400))))
    for name in names[2::7]:
        del f[name]
    for i in range(5):
        f.create_dataset(f"added-{i}", data=payload(int(rng.integers(1, 300))))
    f.move(names[1], "moved")


@flavour("edited-in-place", libver=("v108", "v110"))
def _(f):
    fill(f, 100, 100)
    for name in chunk_names(100)[::3]:
        del f[name]
        f.create_dataset(name, data=payload(150))


@flavour("edited-in-place-earliest", edit=edit_in_place)
def _(f):
    fill(f, 60, 100)


@flavour("edited-in-place-latest", libver="latest", edit=edit_in_place)
def _(f):
    fill(f, 60, 100)


@flavour("edited-in-place-opaque", edit=edit_in_place)
def _(f):
    fill(f, 30, None, opaque=True)


def shrink_to_compact(f):
    for name in chunk_names(30)[3:]:
        del f[name]


@flavour("dense-back-to-compact", libver="latest", edit=shrink_to_compact)
def _(f):
    # Deleting links below the phase-change threshold turns a dense group back into link messages.
    fill(f, 30, 20)


@flavour("many-5000-latest", libver="latest")
def _(f):
    fill(f, 5000, 4)


def as_bytes(value):
    """What h5py read, as bytes: an Empty (null dataspace) is none, a scalar string is itself."""
    if isinstance(value, h5py.Empty):
        return b""
    if isinstance(value, bytes):
        return value
    return np.asarray(value).tobytes()


manifest = {}
for name, path in flavours.items():
    entries = {}
    with h5py.File(path, "r") as f:
        for key in f.keys():
            try:
                obj = f.get(key)
            except Exception:  # an external link to a missing file
                continue
            if not isinstance(obj, h5py.Dataset):
                continue
            entries[key] = hashlib.sha256(as_bytes(obj[()])).hexdigest()
    manifest[path] = entries
print(json.dumps(manifest))
