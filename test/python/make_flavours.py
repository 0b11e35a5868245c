"""Writes HDF5 files in every flavour the shard index must read (or hand to
h5wasm), with h5py, then prints a JSON manifest: for each file, each root
dataset's name and sha256 of `f[name][()].tobytes()` as h5py reads it.

usage: make_flavours.py OUT_DIR
"""
import hashlib
import json
import os
import sys

import h5py
import numpy as np

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)


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


flavours = {}


def flavour(name, libver=None, userblock=None, track_order=None):
    def wrap(fn):
        path = os.path.join(out, name + ".h5")
        kw = {}
        if libver:
            kw["libver"] = libver
        if userblock:
            kw["userblock_size"] = userblock
        if track_order is not None:
            kw["track_order"] = track_order
        with h5py.File(path, "w", **kw) as f:
            fn(f)
        flavours[name] = path
        return fn

    return wrap


@flavour("earliest-small")
def _(f):
    fill(f, 5, 100)


@flavour("earliest-opaque", )
def _(f):
    fill(f, 20, None, opaque=True)


@flavour("earliest-deep", )
def _(f):
    fill(f, 1500, 16)  # v1 B-tree of several levels


@flavour("v108-compact-links", libver=("v108", "v110"))
def _(f):
    fill(f, 6, 500)


@flavour("v108-dense", libver=("v108", "v110"))
def _(f):
    fill(f, 300, None)


@flavour("latest-dense-1200", libver="latest")
def _(f):
    fill(f, 1200, 32)


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


@flavour("chunked-gzip")
def _(f):
    fill(f, 4, 5000, chunks=(1000,), compression="gzip")
    fill_plain = payload(100)
    f.create_dataset("plain", data=fill_plain)


@flavour("compact-layout", libver="latest")
def _(f):
    for name in chunk_names(10):
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        data = payload(int(rng.integers(1, 2000)))
        space = h5py.h5s.create_simple(data.shape)
        ds = h5py.h5d.create(f.id, name.encode(), h5py.h5t.NATIVE_UINT8, space, dcpl=dcpl)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, data)


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


@flavour("edited-in-place", libver=("v108", "v110"))
def _(f):
    fill(f, 100, 100)
    for name in chunk_names(100)[::3]:
        del f[name]
        f.create_dataset(name, data=payload(150))


@flavour("many-5000-latest", libver="latest")
def _(f):
    fill(f, 5000, 4)


manifest = {}
for name, path in flavours.items():
    entries = {}
    with h5py.File(path, "r") as f:
        for key in f.keys():
            obj = f.get(key)
            if not isinstance(obj, h5py.Dataset):
                continue
            entries[key] = hashlib.sha256(obj[()].tobytes()).hexdigest()
    manifest[path] = entries
print(json.dumps(manifest))
