"""HDF5 files from strangers: walk the metadata, check it, and only then read what was checked.

:class:`H5File` opens a file with h5py and walks every link before any data is read. It refuses,
with one line naming the object, anything a parameter file has no use for and that could make
the process read elsewhere or allocate without bound (docs/weights-files.md):

- soft, external and user-defined links, and objects with more than one name (hard-link loops);
- objects other than groups and datasets (named datatypes);
- datasets that are not plain numbers (integers or IEEE floats of 1 to 8 bytes), that have no
  dataspace, that keep their data outside the file (external raw storage, virtual datasets),
  or that use filters other than gzip, shuffle and fletcher32;
- more than :data:`MAX_OBJECTS` objects or groups nested deeper than :data:`MAX_DEPTH`.

What the walk gives (:attr:`H5File.datasets`: name, shape, dtype, nnabla's ``index``
attribute) is what a caller compares with what it expects (for parameters:
:func:`xumx.params.parameter_spec`). :meth:`H5File.read` then allocates exactly the declared
size of one dataset; its chunks must be at most the dataset's size (or 1 MiB), and compressed
chunks are decoded with a bound before HDF5 reads them and must give exactly the chunk's size:
a small file cannot make a large allocation (HDF5's gzip filter grows its buffer until the
stream ends), and a short chunk cannot make HDF5 read past its buffer (a crash, or other
memory copied into the values, with HDF5 2.0).
"""
import errno
import os
import stat
import zlib
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from .errors import WeightsError  # noqa: F401  (raised here; also xumx.weights.WeightsError)

#: Most links walked in one file (the published x-umx.h5 has 88 datasets in 45 groups).
MAX_OBJECTS = 4096
#: Deepest group nesting walked.
MAX_DEPTH = 32
#: Chunks may be as large as their dataset, or this (bytes) for small datasets.
MIN_CHUNK_LIMIT = 1 << 20
#: Most chunks in one dataset that is read.
MAX_CHUNKS = 1 << 16
#: Longest text attribute read (the checkpoint's JSON metadata).
MAX_TEXT = 64 << 20
#: Longest object name quoted in a message.
_NAME_CHARS = 120


def _brief(error: BaseException) -> str:
    """An h5py/HDF5 message on one line (HDF5 puts line breaks in some), at most 200 chars."""
    return " ".join(str(error).split())[:200] or type(error).__name__


def show(name: str) -> str:
    """An object name fit for a one-line message: control characters escaped, long names cut."""
    text = name.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= _NAME_CHARS else text[:_NAME_CHARS] + "..."


@dataclass(frozen=True)
class Entry:
    """What the walk found out about one dataset, without reading it."""
    name: str
    shape: Tuple[int, ...]
    dtype: np.dtype
    index: Optional[int]   # nnabla's creation-order attribute, when it is a plain number

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=object))


def _filters():
    import h5py
    return {h5py.h5z.FILTER_DEFLATE: "gzip", h5py.h5z.FILTER_SHUFFLE: "shuffle",
            h5py.h5z.FILTER_FLETCHER32: "fletcher32"}


def _type_problem(tid) -> Optional[str]:
    """Why an HDF5 datatype is not plain numbers (None when it is)."""
    import h5py
    cls = tid.get_class()
    names = {h5py.h5t.STRING: "string", h5py.h5t.VLEN: "variable-length",
             h5py.h5t.OPAQUE: "opaque", h5py.h5t.COMPOUND: "compound", h5py.h5t.ENUM: "enum",
             h5py.h5t.REFERENCE: "reference", h5py.h5t.ARRAY: "array",
             h5py.h5t.BITFIELD: "bitfield", h5py.h5t.TIME: "time"}
    if cls == h5py.h5t.INTEGER:
        return None if tid.get_size() in (1, 2, 4, 8) else f"{8 * tid.get_size()}-bit integer"
    if cls == h5py.h5t.FLOAT:
        size = tid.get_size()
        ieee = {2: (15, 10, 5, 0, 10), 4: (31, 23, 8, 0, 23), 8: (63, 52, 11, 0, 52)}
        try:
            fields = tid.get_fields()   # (sign pos, exponent pos, exponent size, mantissa pos/size)
        except Exception:
            return "unusual float"
        if size in ieee and fields == ieee[size]:
            return None
        return f"{8 * size}-bit non-IEEE float"
    return names.get(cls, f"HDF5 class {cls}")


class H5File:
    """An HDF5 file opened for reading and walked (see the module docstring).

    ``with H5File(path) as h5:`` -> ``h5.datasets`` {name: :class:`Entry`},
    ``h5.read(name, shape)``, ``h5.text(attribute)``. Raises :class:`WeightsError` (one line,
    starting with the path) for anything refused and for files that cannot be read (the
    operating system's reason), and never reads data during the walk.
    """

    def __init__(self, path: str):
        self.path = path
        self.datasets: Dict[str, Entry] = {}
        self._objects: Dict[str, object] = {}
        self._file = self._open()
        try:
            self._walk()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening and walking
    def error(self, message: str) -> WeightsError:
        return WeightsError(f"{self.path}: {message}")

    def _open(self):
        import h5py
        from .files import os_reason
        path = self.path
        try:
            if os.path.isdir(path):
                raise IsADirectoryError(errno.EISDIR, path)
            if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
                raise self.error("not a regular file (a device, pipe or socket)")
            with open(path, "rb") as f:   # the operating system's reason, in its words
                magic = f.read(8)
        except FileNotFoundError:
            raise self.error("no such file") from None
        except IsADirectoryError:
            raise self.error("is a folder without best_xumx.h5, so not a training run's "
                             "folder (use --umx-infer for UMX folders)") from None
        except OSError as e:
            raise self.error(f"cannot be read ({os_reason(e)})") from None
        if not magic:
            raise self.error("not an HDF5 parameter file (the file is empty)")
        try:
            is_h5 = h5py.is_hdf5(path)
        except OSError as e:
            raise self.error(f"cannot be read ({os_reason(e)})") from None
        if not is_h5:
            raise self.error("not an HDF5 parameter file")
        try:
            return h5py.File(path, "r")
        except (OSError, RuntimeError, ValueError) as e:
            raise self.error(f"damaged or truncated HDF5 file ({os_reason(e)})") from None

    def _walk(self):
        import h5py
        seen: Dict[int, str] = {}
        pending = [("", self._file, 0)]
        count = 0
        while pending:
            prefix, group, depth = pending.pop()
            if depth > MAX_DEPTH:
                raise self.error(f"groups nested deeper than {MAX_DEPTH} at '{show(prefix)}'")
            try:
                n = group.id.get_num_objs()
                if count + n > MAX_OBJECTS:
                    raise self.error(f"more than {MAX_OBJECTS} objects: not a parameter file")
                names = [name for name in group.id]
            except WeightsError:
                raise
            except (OSError, RuntimeError, ValueError, KeyError) as e:
                raise self.error(f"damaged or truncated HDF5 file ({_brief(e)})") from None
            count += n
            for raw in names:
                key = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
                name = prefix + key.decode("utf-8", "surrogateescape")
                self._check_link(group, key, name)
                try:
                    oid = h5py.h5o.open(group.id, key)
                    info = h5py.h5o.get_info(oid)
                except (OSError, RuntimeError, ValueError, KeyError) as e:
                    raise self.error(f"damaged or truncated HDF5 file at '{show(name)}' ({_brief(e)})") from None
                if info.addr in seen or info.rc > 1:
                    other = seen.get(info.addr)
                    raise self.error(f"'{show(name)}' has more than one name"
                                     + (f" (also '{show(other)}')" if other else "")
                                     + ": a parameter file has one name per object")
                seen[info.addr] = name
                if info.type == h5py.h5o.TYPE_GROUP:
                    pending.append((name + "/", h5py.Group(oid), depth + 1))
                elif info.type == h5py.h5o.TYPE_DATASET:
                    self._check_dataset(h5py.Dataset(oid), name)
                else:
                    kind = "a named datatype" if info.type == h5py.h5o.TYPE_NAMED_DATATYPE \
                        else f"an HDF5 object of type {info.type}"
                    raise self.error(f"'{show(name)}' is {kind}, not a dataset or a group")

    def _check_link(self, group, key: bytes, name: str):
        import h5py
        try:
            info = group.id.links.get_info(key)
        except (OSError, RuntimeError, ValueError, KeyError) as e:
            raise self.error(f"damaged or truncated HDF5 file at '{show(name)}' ({_brief(e)})") from None
        if info.type == h5py.h5l.TYPE_HARD:
            return
        if info.type == h5py.h5l.TYPE_SOFT:
            what = "a soft link"
        elif info.type == h5py.h5l.TYPE_EXTERNAL:
            what = "an external link (to another file)"
        else:
            what = f"a user-defined link (type {info.type})"
        raise self.error(f"'{show(name)}' is {what}: a parameter file may contain no links")

    def _check_dataset(self, ds, name: str):
        import h5py
        try:
            problem = _type_problem(ds.id.get_type())
            space = ds.id.get_space()
            extent = space.get_simple_extent_type()
            dcpl = ds.id.get_create_plist()
            layout = dcpl.get_layout()
            external = dcpl.get_external_count()
            filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        except (OSError, RuntimeError, ValueError, KeyError) as e:
            raise self.error(f"damaged or truncated HDF5 file at '{show(name)}' ({_brief(e)})") from None
        if not problem:
            try:
                dtype = ds.dtype
            except (ValueError, TypeError, OSError, RuntimeError):   # e.g. an odd precision
                problem = "unusual number type"
        if problem:
            raise self.error(f"dataset '{show(name)}' holds {problem} data, not numbers: "
                             f"not a parameter file")
        if extent == h5py.h5s.NULL:
            raise self.error(f"dataset '{show(name)}' has no dataspace (no values)")
        if external:
            raise self.error(f"dataset '{show(name)}' keeps its values in another file (HDF5 "
                             f"external storage): a parameter file must hold its values")
        if layout == h5py.h5d.VIRTUAL:
            raise self.error(f"dataset '{show(name)}' is a virtual dataset (its values are "
                             f"mapped from other datasets or files): refused")
        if layout not in (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT):
            raise self.error(f"dataset '{show(name)}' has an unknown storage layout ({layout})")
        allowed = _filters()
        for code in filters:
            if code not in allowed:
                raise self.error(f"dataset '{show(name)}' uses the HDF5 filter {code}: only "
                                 f"gzip, shuffle and fletcher32 are read")
        if len(set(filters)) != len(filters):
            raise self.error(f"dataset '{show(name)}' applies a filter twice")
        index = None
        try:
            if h5py.h5a.exists(ds.id, b"index"):
                attr = h5py.h5a.open(ds.id, b"index")
                if attr.shape in ((), (1,)) and _type_problem(attr.get_type()) is None:
                    value = np.zeros(attr.shape, attr.dtype)
                    attr.read(value)
                    if np.isfinite(value).all():
                        index = int(value.reshape(-1)[0])
        except (OSError, RuntimeError, ValueError, KeyError, OverflowError):
            index = None   # not nnabla's number: order by name
        self.datasets[name] = Entry(name, tuple(int(n) for n in space.shape), dtype, index)
        self._objects[name] = ds

    # ------------------------------------------------------------------ reading
    def read(self, name: str, shape: Tuple[int, ...], dtype=np.float32) -> np.ndarray:
        """The values of dataset ``name`` as ``dtype``; ``shape`` is what the caller checked
        the declared shape against (a second check here, before the allocation)."""
        entry = self.datasets[name]
        if entry.shape != tuple(shape):
            raise self.error(f"parameter '{show(name)}' has shape {entry.shape}, expected {tuple(shape)}")
        ds = self._objects[name]
        try:
            self._check_chunks(ds, entry)
            out = np.empty(entry.shape, dtype)
            if out.size:
                ds.read_direct(out)
        except WeightsError:
            raise
        except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:
            raise self.error(f"damaged or truncated HDF5 file: '{show(name)}' cannot be read "
                             f"({_brief(e)})") from None
        return out

    def _check_chunks(self, ds, entry: Entry):
        """Chunks no larger than the dataset (or 1 MiB), not too many, each stored or decoding
        to exactly its size (compressed ones inflated with a bound)."""
        import h5py
        dcpl = ds.id.get_create_plist()
        if dcpl.get_layout() != h5py.h5d.CHUNKED:
            return
        chunk = dcpl.get_chunk()
        itemsize = entry.dtype.itemsize
        chunk_bytes = int(np.prod(chunk, dtype=object)) * itemsize
        limit = max(entry.size * itemsize, MIN_CHUNK_LIMIT)
        if chunk_bytes > limit:
            raise self.error(f"dataset '{show(entry.name)}' has chunks of {chunk_bytes} bytes, "
                             f"more than its {entry.size * itemsize} bytes of values")
        spans = int(np.prod([-(-n // c) for n, c in zip(entry.shape, chunk)], dtype=object))
        if spans > MAX_CHUNKS:
            raise self.error(f"dataset '{show(entry.name)}' is split into {spans} chunks "
                             f"(at most {MAX_CHUNKS} are read)")
        pipeline = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        stored_limit = chunk_bytes + chunk_bytes // 100 + 1024   # gzip's worst expansion
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            if not pipeline:
                if info.size != chunk_bytes:
                    raise self.error(f"a chunk of '{show(entry.name)}' stores {info.size} bytes, "
                                     f"not {chunk_bytes}")
                continue
            if info.size > stored_limit:
                raise self.error(f"a chunk of '{show(entry.name)}' stores {info.size} bytes for "
                                 f"{chunk_bytes} bytes of values")
            mask, data = ds.id.read_direct_chunk(info.chunk_offset)
            for k in reversed(range(len(pipeline))):
                if mask & (1 << k):
                    continue   # that filter was skipped for this chunk
                if pipeline[k] == h5py.h5z.FILTER_FLETCHER32:
                    data = data[:-4]
                elif pipeline[k] == h5py.h5z.FILTER_DEFLATE:
                    z = zlib.decompressobj()
                    try:
                        data = z.decompress(data, chunk_bytes + 1)
                    except zlib.error as e:
                        raise self.error(f"a compressed chunk of '{show(entry.name)}' is "
                                         f"damaged ({_brief(e)})") from None
                    if len(data) > chunk_bytes or z.unconsumed_tail:
                        raise self.error(f"a compressed chunk of '{show(entry.name)}' inflates "
                                         f"beyond its {chunk_bytes} bytes")
            # HDF5 2.0 reads past a chunk that decodes short (a crash, or other memory
            # copied into the values): every chunk must decode to exactly its size
            if len(data) != chunk_bytes:
                raise self.error(f"a chunk of '{show(entry.name)}' decodes to {len(data)} bytes, "
                                 f"not {chunk_bytes}")

    def text(self, attribute: str) -> Optional[str]:
        """A string attribute of the file's root (None when absent or not a string). A
        fixed-length one is read only if at most :data:`MAX_TEXT` bytes; a variable-length one
        is bounded by the file's size (HDF5 reads nothing past the file's end)."""
        import h5py
        key = attribute.encode()
        try:
            if not h5py.h5a.exists(self._file.id, key):
                return None
            attr = h5py.h5a.open(self._file.id, key)
            tid = attr.get_type()
            if tid.get_class() != h5py.h5t.STRING or attr.shape not in ((), (1,)):
                return None
            if not tid.is_variable_str() and tid.get_size() > MAX_TEXT:
                raise self.error(f"attribute '{attribute}' is {tid.get_size()} bytes long")
            value = self._file.attrs[attribute]
        except WeightsError:
            raise
        except (OSError, RuntimeError, ValueError, TypeError, KeyError) as e:
            raise self.error(f"damaged HDF5 attribute '{attribute}' ({_brief(e)})") from None
        if isinstance(value, np.ndarray):
            value = value.reshape(-1)[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return value if isinstance(value, str) else None

    # ------------------------------------------------------------------ closing
    def close(self):
        if self._file is not None:
            self._objects.clear()
            try:
                self._file.close()
            except Exception:
                pass
            self._file = None

    def __enter__(self) -> "H5File":
        return self

    def __exit__(self, *exc):
        self.close()
        return False
