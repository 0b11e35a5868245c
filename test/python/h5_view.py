"""What h5py (HDF5 1.10) sees in HDF5 files: the reference the shard index is held to.

usage:
  h5_view.py describe FILE ...
      prints one JSON object {file: {link name: entry}} for every link of each
      file's root group; an entry is {"kind": "soft"|"external"} or, for a hard
      link, {"kind": "hard", "object": "dataset"|"group"|"datatype"} and for a
      dataset what h5py reads (sha256 of its bytes, or "error") and how it is
      stored (layout, filters, address, storage size, type class, shape).
  h5_view.py read
      reads JSON lines {"path": FILE, "names": [...]} on stdin and answers each
      with one JSON line, flushed at once (so a caller that must kill a hung
      HDF5 knows which file hung): {"path", "open": null or the error,
      "keys": [root link names, see key_text] or null, "keysError", "reads": {name: sha256
      or "error: ..."}}. Damaged files are expected: every failure is data.
"""
import hashlib
import json
import os
import sys

import h5py
import numpy as np

#: Exit status of "read" after a file HDF5 could not close cleanly: start a new process for the rest.
RESTART = 3

LAYOUTS = {h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked", h5py.h5d.COMPACT: "compact"}
if hasattr(h5py.h5d, "VIRTUAL"):
    LAYOUTS[h5py.h5d.VIRTUAL] = "virtual"


def as_bytes(value):
    """What h5py read, as bytes: an Empty (null dataspace) is none, a scalar string is itself."""
    if isinstance(value, h5py.Empty):
        return b""
    if isinstance(value, bytes):
        return value
    return np.asarray(value).tobytes()


def sha(value):
    return hashlib.sha256(as_bytes(value)).hexdigest()


def describe_dataset(ds):
    entry = {"kind": "hard", "object": "dataset"}
    try:
        entry["sha256"] = sha(ds[()])
    except Exception as error:
        entry["sha256"] = None
        entry["error"] = str(error)
    dcpl = ds.id.get_create_plist()
    entry["layout"] = LAYOUTS.get(dcpl.get_layout(), str(dcpl.get_layout()))
    entry["filters"] = dcpl.get_nfilters()
    entry["external"] = dcpl.get_external_count()
    entry["offset"] = ds.id.get_offset()
    entry["storage"] = ds.id.get_storage_size()
    tid = ds.id.get_type()
    entry["typeClass"] = tid.get_class()
    entry["typeSize"] = tid.get_size()
    entry["committedType"] = tid.committed()
    entry["shape"] = None if ds.shape is None else list(ds.shape)
    return entry


def describe(path):
    links = {}
    with h5py.File(path, "r") as f:
        for name in f.keys():
            link = f.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                links[name] = {"kind": "soft"}
            elif isinstance(link, h5py.ExternalLink):
                links[name] = {"kind": "external"}
            else:
                cls = f.get(name, getclass=True)
                if cls is h5py.Dataset:
                    links[name] = describe_dataset(f[name])
                elif cls is h5py.Group:
                    links[name] = {"kind": "hard", "object": "group"}
                else:
                    links[name] = {"kind": "hard", "object": "datatype"}
    return links


def key_text(key):
    """A link name as text; h5py gives bytes for a name that is not UTF-8, shown here as "<bytes>" and hex."""
    return key if isinstance(key, str) else "<bytes>" + key.hex()


def read(request):
    answer = {"path": request["path"], "open": None, "keys": None, "keysError": None, "reads": {}, "classes": {}}
    try:
        f = h5py.File(request["path"], "r")
    except Exception as error:
        answer["open"] = str(error) or type(error).__name__
        return answer, True
    try:
        try:
            answer["keys"] = [key_text(key) for key in f.keys()]
        except Exception as error:
            answer["keysError"] = str(error) or type(error).__name__
        for name in request["names"]:
            try:
                answer["reads"][name] = sha(f[name][()])
            except Exception as error:
                answer["reads"][name] = "error: " + (str(error) or type(error).__name__)
        # What each other link is to h5py: a dataset the caller did not ask about is one it missed.
        for key in answer["keys"] or []:
            if key in request["names"] or key.startswith("<bytes>"):
                continue
            try:
                cls = f.get(key, getclass=True)
                answer["classes"][key] = {h5py.Dataset: "dataset", h5py.Group: "group", h5py.Datatype: "datatype"}.get(cls, str(cls))
            except Exception as error:
                answer["classes"][key] = "error: " + (str(error) or type(error).__name__)
    finally:
        try:
            f.close()
            clean = True
        except Exception as error:
            # HDF5 may be left in a bad state by a damaged file: the caller starts a fresh process for the next one.
            answer["closeError"] = str(error) or type(error).__name__
            clean = False
    return answer, clean


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "describe":
        print(json.dumps({path: describe(path) for path in sys.argv[2:]}))
    elif mode == "read":
        for line in sys.stdin:
            if line.strip():
                answer, clean = read(json.loads(line))
                sys.stdout.write(json.dumps(answer) + "\n")
                sys.stdout.flush()
                if not clean:
                    os._exit(RESTART)
    else:
        sys.exit(f"unknown mode {mode}")
