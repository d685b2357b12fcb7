"""Reads an ELF core with Volatility 3's own layers and prints JSON, for cli/tests/forensics.rs.

usage: vol_check.py ELF [--read PADDR:LEN]... [--scan-virtual CR3:START:LEN:NEEDLE]

--read prints the hex of LEN octets at guest-physical PADDR, through Volatility's Elf64Layer.
--scan-virtual builds Volatility's Intel32e (4-level, long mode) translation layer over the
ELF with page_map_offset CR3 and searches the virtual range [START, START+LEN) for NEEDLE
(text), reading page by page and skipping unmapped pages; it prints the first virtual
address found and the 200 octets there.
"""
import json
import os
import pathlib
import sys

from volatility3.framework import contexts, exceptions
from volatility3.framework.layers import elf, intel, physical


def main(argv):
    path = os.path.abspath(argv[1])
    ctx = contexts.Context()
    ctx.config["file.location"] = pathlib.Path(path).as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "file", "file"))
    ctx.config["elf.base_layer"] = "file"
    ctx.add_layer(elf.Elf64Layer(ctx, "elf", "elf"))
    out = {"reads": [], "scan": None}
    args = argv[2:]
    while args:
        opt, val = args[0], args[1]
        args = args[2:]
        if opt == "--read":
            paddr, length = (int(x, 0) for x in val.split(":"))
            data = ctx.layers["elf"].read(paddr, length)
            out["reads"].append({"paddr": paddr, "hex": data.hex()})
        elif opt == "--scan-virtual":
            cr3, start, length, needle = val.split(":", 3)
            cr3, start, length = int(cr3, 0), int(start, 0), int(length, 0)
            ctx.config["virt.memory_layer"] = "elf"
            ctx.config["virt.page_map_offset"] = cr3
            ctx.add_layer(intel.Intel32e(ctx, "virt", "virt"))
            virt = ctx.layers["virt"]
            needle = needle.encode()
            page = 0x1000
            addr = start
            carry = b""
            found = None
            while addr < start + length and found is None:
                try:
                    chunk = virt.read(addr, page)
                except exceptions.InvalidAddressException:
                    carry = b""
                    addr += page
                    continue
                hay = carry + chunk
                i = hay.find(needle)
                if i >= 0:
                    found = addr - len(carry) + i
                carry = chunk[-len(needle):]
                addr += page
            if found is not None:
                text = virt.read(found, 200, pad=True)
                out["scan"] = {"vaddr": found, "text": text.split(b"\0")[0].decode("latin-1")}
        else:
            raise SystemExit("unknown option " + opt)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv)
