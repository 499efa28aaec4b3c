#!/usr/bin/env python3
"""Generates the PCMU reference vectors with Python's audioop (Python <= 3.12).

pcmu_encode.bin: 65,536 bytes, the mu-law code of every 16-bit input, in input order
                 -32768, -32767, ..., 32767.
pcmu_decode.bin: 512 bytes, the linear value of every code 0..=255 as little-endian i16.

Run from this directory: python3 gen_pcmu.py
"""
import audioop
import struct

every_sample = struct.pack("<65536h", *range(-32768, 32768))
with open("pcmu_encode.bin", "wb") as f:
    f.write(audioop.lin2ulaw(every_sample, 2))
with open("pcmu_decode.bin", "wb") as f:
    f.write(audioop.ulaw2lin(bytes(range(256)), 2))
