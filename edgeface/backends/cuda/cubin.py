"""Resource use read off a cubin (an ELF file), without a GPU or CUDA tools.

Per kernel: registers per thread (EIATTR_REGCOUNT in ``.nv.info``, or the top 8 bits of ``sh_info``
of ``.text.<kernel>`` in older cubins) and static shared memory (the size of ``.nv.shared.<kernel>``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

EIATTR_REGCOUNT = 0x2F
EIFMT_SVAL, EIFMT_HVAL, EIFMT_BVAL = 4, 3, 2


@dataclass(frozen=True)
class KernelResources:
    registers: int
    shared_bytes: int


def _info_entries(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(attribute, payload) pairs of an ``.nv.info`` section."""
    i = 0
    while i + 2 <= len(data):
        fmt, attr = data[i], data[i + 1]
        i += 2
        if fmt == EIFMT_SVAL:
            size = struct.unpack_from("<H", data, i)[0]
            yield attr, data[i + 2 : i + 2 + size]
            i += 2 + size
        elif fmt == EIFMT_HVAL:
            yield attr, data[i : i + 2]
            i += 2
        elif fmt == EIFMT_BVAL:
            yield attr, data[i : i + 1]
            i += 1
        else:
            yield attr, b""


def kernel_resources(cubin: bytes) -> dict[str, KernelResources]:
    if cubin[:4] != b"\x7fELF" or cubin[4] != 2:
        raise ValueError("not a 64-bit ELF cubin")
    shoff = struct.unpack_from("<Q", cubin, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", cubin, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", cubin, shoff + i * shentsize) for i in range(shnum)]

    def c_string(offset: int) -> str:
        return cubin[offset : cubin.index(b"\0", offset)].decode()

    named = {c_string(sections[shstrndx][4] + s[0]): s for s in sections}
    registers = {n[6:]: s[7] >> 24 for n, s in named.items() if n.startswith(".text.")}
    shared = {n[11:]: s[5] for n, s in named.items() if n.startswith(".nv.shared.") and "reserved" not in n}
    if ".nv.info" in named and ".symtab" in named and ".strtab" in named:
        symtab, strtab = named[".symtab"], named[".strtab"]
        info = named[".nv.info"]
        for attr, payload in _info_entries(cubin[info[4] : info[4] + info[5]]):
            if attr == EIATTR_REGCOUNT and len(payload) == 8:
                symbol, count = struct.unpack("<II", payload)
                name = c_string(strtab[4] + struct.unpack_from("<I", cubin, symtab[4] + 24 * symbol)[0])
                if name in registers:
                    registers[name] = count
    return {k: KernelResources(r, shared.get(k, 0)) for k, r in registers.items()}
