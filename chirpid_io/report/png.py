"""A minimal PNG writer for uint8 images drawn through a 256-colour palette.

An indexed PNG stores one byte per pixel, as the cache does, so a spectrogram window
costs about what the old PNG set paid per window; the palette makes it a colour image.
Rows use the "Sub" filter (difference to the left neighbour), which suits smooth images.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np


def indexed_png(image: np.ndarray, palette: np.ndarray) -> bytes:
    """PNG bytes of ``image`` (H, W) uint8 indices into ``palette`` (256, 3) uint8 RGB."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    palette = np.asarray(palette, dtype=np.uint8)
    if image.ndim != 2 or image.size == 0:
        raise ValueError(f"indexed_png needs a non-empty 2-D image, got shape {image.shape}")
    if palette.shape != (256, 3):
        raise ValueError(f"indexed_png needs a (256, 3) palette, got {palette.shape}")
    height, width = image.shape
    sub = np.diff(image, axis=1, prepend=np.zeros((height, 1), np.uint8))  # wraps mod 256, as PNG wants
    rows = np.concatenate([np.ones((height, 1), np.uint8), sub], axis=1)  # filter byte 1 = Sub
    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return b"".join([b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), _chunk(b"PLTE", palette.tobytes()),
                     _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)), _chunk(b"IEND", b"")])


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def palette_from_scale(colors: list[str]) -> np.ndarray:
    """(256, 3) uint8 by linear interpolation between evenly spaced ``#rrggbb`` or
    ``rgb(r, g, b)`` stops (a Plotly colour scale)."""
    stops = np.array([_rgb(c) for c in colors], dtype=np.float64)
    where = np.linspace(0, 1, len(stops))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, where, stops[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)


def _rgb(color: str) -> tuple[int, int, int]:
    color = color.strip()
    if color.startswith("#"):
        return tuple(int(color[i : i + 2], 16) for i in (1, 3, 5))
    inner = color[color.index("(") + 1 : color.index(")")]
    return tuple(int(float(v)) for v in inner.split(",")[:3])


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
