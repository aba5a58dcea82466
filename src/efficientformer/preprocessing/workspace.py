"""Work arrays of the resize and the normalization, kept per thread from call to call.

A fresh array of a few hundred kilobytes costs more than the arithmetic done on it: glibc hands large
blocks back to the operating system when they are freed (at the top of the heap, or mapped apart), so the
next call touches new pages, one page fault each (for a 640x480 photo about 250 faults a call, 0.5 to 0.8 ms
in a virtual machine, as much as the resize itself). Arrays kept here are faulted in once per thread.

All roles of a thread live in one arena of at least 4 MB, aligned to 2 MB, which numpy asks the kernel to
back with huge pages (`madvise`, where transparent huge pages are enabled): between two calls other work (a
model, another library) evicts the caches and the address translations, and six megabytes in 4 kB pages
cost about 1500 page-table walks to bring back (doubly nested in a virtual machine), against three or four
in 2 MB pages. Arrays of one role share their memory whatever their shape and type, so the steps of a
resize that need a buffer one after the other (the horizontal products, then the vertical ones, then the
lookup indices) reuse the same cache lines. A caller must be done with a role's array before it takes the
same role again; the contents are overwritten by whoever takes it next.
"""

from __future__ import annotations

import threading

import numpy as np

# an arena above this is not kept (requests beyond it get fresh arrays): the float32 resize of the largest
# region it takes (4 million samples, `resample.STRIP_ELEMENTS`) needs about 30 MB
MAX_KEPT_BYTES = 64 << 20
MAX_VIEWS = 64  # shaped views kept per thread; beyond it (many image sizes in turn) they are rebuilt
_HUGE_PAGE = 1 << 21
_MIN_ARENA = 1 << 22  # numpy advises huge pages from 4 MB on
_ALIGN = 4096  # each role starts on its own page
_LOCAL = threading.local()


def work_array(role: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """An uninitialised C-ordered array of this thread for `role`: a view of the role's part of the arena,
    which grows to the largest request of each role."""
    state = _LOCAL.__dict__
    views = state.setdefault("views", {})
    key = (role, shape, dtype)
    view = views.get(key)
    if view is not None:
        return view
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize
    for side in shape:
        nbytes *= side
    sizes = state.setdefault("sizes", {})  # role -> bytes reserved for it
    if nbytes > sizes.get(role, -1):
        wanted = dict(sizes, **{role: -(-max(nbytes, 1) // _ALIGN) * _ALIGN})
        if sum(wanted.values()) > MAX_KEPT_BYTES:
            return np.empty(shape, dtype=dtype)
        sizes.clear()
        sizes.update(wanted)
        _layout(state)
        views = state["views"]
    if len(views) >= MAX_VIEWS:
        views.clear()
    start = state["offsets"][role]
    view = views[key] = state["arena"][start:start + nbytes].view(dtype).reshape(shape)
    return view


def _layout(state: dict) -> None:
    """A new arena holding every role's reservation (arrays of the old one stay valid while referenced)."""
    offsets, total = {}, 0
    for role, size in state["sizes"].items():
        offsets[role] = total
        total += size
    raw = np.empty(max(total, _MIN_ARENA) + _HUGE_PAGE, dtype=np.uint8)
    start = -raw.ctypes.data % _HUGE_PAGE
    state["arena"] = raw[start:start + max(total, _MIN_ARENA)]
    state["offsets"] = offsets
    state["views"] = {}
