"""``chirpid.band_predict``: a predictor chosen per mel band, as a Zarr v3 array-to-array codec.

PNG picks a prediction filter per image row; this codec does the same per mel band of a
(..., n_mels, frames) uint8 chunk, among the four linear predictors whose undoing is a
(masked) cumulative sum, so decoding stays vectorised:

====  ==========================================================================
mode  stored value of band ``i``, frame ``j`` (uint8, wrapping)
====  ==========================================================================
0     ``x[i, j]`` (no prediction)
1     ``x[i, j] - x[i, j-1]`` (from the frame before; PNG "Sub")
2     ``x[i, j] - x[i-1, j]`` (from the band below; PNG "Up")
3     both differences (from three neighbours: the gradient, ``band+time``'s predictor)
====  ==========================================================================

(a missing neighbour counts as 0). Each band takes the mode whose differences have the
smallest sum of magnitudes (PNG's heuristic), ties going to mode 3, then 1, 2, 0. The
modes travel in ``header_rows`` extra rows in front of each window's differences, one
byte per band, so the stored chunk is (..., n_mels + header_rows, frames): still one
array, compressed by the ordinary zstd codec after it, and the GPU loader can undo it
from what it reads (``undo_stored``).

Decoding a window: one cumulative sum along frames (then the plain bands copied back),
one along bands, and, where some band does not predict from the band below, the sum at
the start of its run of bands subtracted (a gather of one row per band).

Measured (``benchmarks/storage_corpora.py``, README "Storage"): 1-2% fewer bytes than
``band+time`` on every corpus, for 13-24% slower random-batch reads on the CPU and slower
writes (four candidates per band).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from zarr.abc.codec import ArrayArrayCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.common import parse_named_configuration

NAME = "chirpid.band_predict"
FRAME_DIFF, BAND_DIFF = 1, 2  #: mode bits
#: candidate modes in order of preference (the first of equal costs wins)
PREFERENCE = (3, 1, 2, 0)


def header_rows(n_mels: int, frames: int) -> int:
    """Rows of ``frames`` bytes that hold ``n_mels`` one-byte modes."""
    return -(-n_mels // frames)


def stored_shape(window_shape: tuple[int, int]) -> tuple[int, int]:
    """(n_mels, frames) -> the shape of one stored window (header rows first)."""
    n_mels, frames = window_shape
    return n_mels + header_rows(n_mels, frames), frames


def _split(total: int, frames: int) -> tuple[int, int]:
    """(header rows, n_mels) of a stored window with ``total`` rows: the inverse of
    ``stored_shape`` (``n_mels + ceil(n_mels / frames)`` grows with ``n_mels``)."""
    header = -(-total // (frames + 1))
    return header, total - header


def encode(windows: np.ndarray) -> np.ndarray:
    """uint8 (..., n_mels, frames) -> stored (..., n_mels + header_rows, frames), a new array."""
    x = np.ascontiguousarray(windows, dtype=np.uint8)
    *lead, n_mels, frames = x.shape
    candidates = np.empty((4, *x.shape), np.uint8)
    candidates[0] = x
    candidates[2] = x
    candidates[2][..., 1:, :] -= x[..., :-1, :]
    for mode in (1, 3):
        source = candidates[mode - 1]
        candidates[mode] = source
        candidates[mode][..., 1:] -= source[..., :-1]
    preference = np.asarray(PREFERENCE)
    ranked = candidates[preference].view(np.int8).reshape(4, -1, n_mels, frames)
    cost = np.abs(ranked, dtype=np.int16).sum(axis=-1, dtype=np.int32)  # (4, windows, n_mels)
    modes = preference[np.argmin(cost, axis=0)]
    header = header_rows(n_mels, frames)
    out = np.zeros((*lead, n_mels + header, frames), np.uint8)
    flat_header = np.zeros((len(modes), header * frames), np.uint8)
    flat_header[:, :n_mels] = modes
    out[..., :header, :] = flat_header.reshape(*lead, header, frames)
    picked = candidates.reshape(4, -1, n_mels, frames)[modes, np.arange(len(modes))[:, None], np.arange(n_mels)]
    out[..., header:, :] = picked.reshape(*lead, n_mels, frames)
    return out


def decode(stored: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Stored (..., n_mels + header_rows, frames) -> the windows, into ``out`` (new by
    default; never ``stored`` itself). Mode bytes above 3 are read modulo 4."""
    stored = np.asarray(stored, dtype=np.uint8)
    *lead, total, frames = stored.shape
    header, n_mels = _split(total, frames)
    out = np.empty((*lead, n_mels, frames), np.uint8) if out is None else out
    for index in np.ndindex(*lead):  # window by window: its rows stay in cache (one window per chunk: once)
        _decode_window(stored[index], out[index], header, n_mels)
    return out


def _decode_window(stored: np.ndarray, out: np.ndarray, header: int, n_mels: int) -> None:
    import torch

    modes = stored[:header].reshape(-1)[:n_mels]
    diffs = stored[header:]
    rows = np.empty((n_mels + 1, stored.shape[1]), np.uint8)  # row 0 stays 0: "the band below band 0"
    rows[0] = 0
    summed = rows[1:]
    torch.cumsum(torch.from_numpy(diffs), dim=1, dtype=torch.uint8, out=torch.from_numpy(summed))
    plain = np.flatnonzero((modes & FRAME_DIFF) == 0)
    if plain.size:
        summed[plain] = diffs[plain]
    torch.from_numpy(summed).cumsum_(dim=0)  # in place, wrapping in uint8
    starts = (modes & BAND_DIFF) == 0
    starts[0] = True
    # each band minus the running sum just below the start of its run of bands
    first = np.maximum.accumulate(np.where(starts, np.arange(n_mels), 0))
    np.subtract(summed, rows[first], out=out)


def undo_stored(x):
    """The loader's device-side decode: torch uint8 (B, n_mels + header_rows, frames) as
    ``Cache.read(..., residuals=True)`` gives -> int32 (B, n_mels, frames) in 0..255, on
    ``x``'s device (int32 sums: CUDA has no uint8 cumsum); equal to :func:`decode`."""
    import torch

    batch, total, frames = x.shape
    header, n_mels = _split(total, frames)
    modes = x[:, :header].reshape(batch, header * frames)[:, :n_mels].to(torch.int64)
    diffs = x[:, header:].to(torch.int32)
    framed = (modes & FRAME_DIFF).bool().unsqueeze(-1)
    summed = torch.where(framed, torch.cumsum(diffs, dim=2, dtype=torch.int32), diffs)
    totals = torch.cumsum(summed, dim=1, dtype=torch.int32)  # < 255 * frames * n_mels: no overflow
    starts = (modes & BAND_DIFF) == 0
    starts[:, 0] = True
    first = torch.cummax(torch.where(starts, torch.arange(n_mels, device=x.device), 0), dim=1).values
    padded = torch.nn.functional.pad(totals, (0, 0, 1, 0))
    base = torch.gather(padded, 1, first.unsqueeze(-1).expand(-1, -1, frames))
    return (totals - base).bitwise_and_(255)


@dataclass(frozen=True)
class BandPredict(ArrayArrayCodec):
    """``chirpid.band_predict`` for (..., mel, frame) uint8 chunks (no configuration)."""

    is_fixed_size = True

    @classmethod
    def from_dict(cls, data):
        _, configuration = parse_named_configuration(data, NAME, require_configuration=False)
        if configuration:
            raise ValueError(f"{NAME} takes no configuration, got {configuration}")
        return cls()

    def to_dict(self):
        return {"name": NAME}

    def validate(self, shape, dtype, chunk_grid) -> None:
        if len(shape) < 2:
            raise ValueError(f"{NAME} needs (..., mel, frame) chunks, not {len(shape)}-d ones")
        if np.dtype(dtype.to_native_dtype()) != np.uint8:
            raise ValueError(f"{NAME} is for uint8 (lossless, wrapping), not {dtype}")

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        *lead, n_mels, frames = chunk_spec.shape
        return ArraySpec(shape=(*lead, *stored_shape((n_mels, frames))), dtype=chunk_spec.dtype,
                         fill_value=chunk_spec.fill_value, config=chunk_spec.config, prototype=chunk_spec.prototype)

    # In a thread, like zarr's own compressors: numpy and torch release the GIL.
    async def _encode_single(self, chunk_array, chunk_spec):
        out = await asyncio.to_thread(encode, chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(out)

    async def _decode_single(self, chunk_array, chunk_spec):
        out = await asyncio.to_thread(decode, chunk_array.as_numpy_array())
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(out)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        *_, n_mels, frames = chunk_spec.shape
        return input_byte_length // n_mels * stored_shape((n_mels, frames))[0] if n_mels else input_byte_length
