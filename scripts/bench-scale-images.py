#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Metadata images for `make bench`'s cost-growth measurement (bench-scale-guest.sh).

usage: bench-scale-images.py DIR N...
For each N, DIR/meta-N.img (64 MiB) holds a pool whose thin device 0 maps its even virtual
blocks 0, 2, ..., 2(N-1) to data blocks 0..N-1 (64 KiB blocks), made by thin_restore from
generated XML, so the guest does not spend minutes of emulated IO to provision them. A
kept image is reused.
"""
import os
import subprocess
import sys

IMG_BYTES = 64 << 20
DATA_BLOCKS = 200 * (1 << 30) // (64 << 10)    # the guest's 200 GiB null_blk data device

out, sizes = sys.argv[1], [int(n) for n in sys.argv[2:]]
os.makedirs(out, exist_ok=True)
for n in sizes:
    img = os.path.join(out, f"meta-{n}.img")
    if os.path.exists(img):
        continue
    xml = img + ".xml"
    with open(xml, "w") as f:
        f.write('<superblock uuid="" time="0" transaction="1" flags="0" version="2" '
                f'data_block_size="128" nr_data_blocks="{DATA_BLOCKS}">\n')
        f.write(f'<device dev_id="0" mapped_blocks="{n}" transaction="0" creation_time="0" '
                'snap_time="0">\n')
        for i in range(n):
            f.write(f'<single_mapping origin_block="{2 * i}" data_block="{i}" time="0"/>\n')
        f.write("</device>\n</superblock>\n")
    with open(img + ".tmp", "wb") as f:
        f.truncate(IMG_BYTES)
    subprocess.run(["thin_restore", "-q", "-i", xml, "-o", img + ".tmp"], check=True)
    subprocess.run(["thin_check", "-q", img + ".tmp"], check=True)
    os.rename(img + ".tmp", img)
    os.remove(xml)
