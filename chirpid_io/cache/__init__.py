"""The Zarr v3 spectrogram cache: build it, open it, verify it."""

from .build import BuildReport, build_cache
from .format import StorageOptions
from .reader import Cache, open_cache
from .verify import VerifyReport, verify_cache

__all__ = ["BuildReport", "Cache", "StorageOptions", "VerifyReport", "build_cache", "open_cache", "verify_cache"]
