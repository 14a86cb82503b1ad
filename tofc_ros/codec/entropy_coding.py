"""One rANS call per image over a CompressAI entropy model's quantized CDF tables.

CompressAI's ``EntropyModel.compress`` converts the whole CDF table to Python lists on every call and codes one
string per batch element. Here the tables are converted once (cached until the model's tables change) and all
symbols of an image are coded into a single string, with a table index per symbol. The coder is CompressAI's
compiled rANS (``compressai.ans``); symbols outside a table's range use its escape (bypass) coding.

The compiled coder copies every table it is handed on every call (170,000 values for the bundled model's 64 scale
tables, ~4.6 ms of a ~10 ms frame decode), so each call gets only the tables its symbols use, with the indexes
renumbered into that list: every symbol is coded with the same table, so the strings and symbols are identical.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._compressai import ans

__all__ = ["TableCoder"]


class TableCoder:
    """Encode/decode integer symbols with per-symbol table indexes against fixed quantized CDF tables.

    Args:
        entropy_model: a CompressAI ``EntropyModel`` after ``update()`` (``_quantized_cdf``, ``_cdf_length``,
            ``_offset`` filled).
    """

    def __init__(self, entropy_model) -> None:
        for name in ("_quantized_cdf", "_cdf_length", "_offset"):
            if getattr(entropy_model, name).numel() == 0:
                raise ValueError("Uninitialized CDFs. Run update() first")
        cdf = entropy_model._quantized_cdf
        self.n_tables = int(cdf.shape[0])
        self._cdfs = cdf.tolist()
        self._lengths = entropy_model._cdf_length.reshape(-1).tolist()
        self._offsets = entropy_model._offset.reshape(-1).tolist()

    @classmethod
    def from_tables(cls, cdfs: list[list[int]], lengths: list[int], offsets: list[int]) -> TableCoder:
        """A coder over given quantized CDF tables (CompressAI's layout: each row ``lengths[i]`` entries from 0 to
        2^precision, the last step being the escape symbol's; symbol s is coded as s - ``offsets[i]``)."""
        if not (len(cdfs) == len(lengths) == len(offsets)) or not cdfs:
            raise ValueError("cdfs, lengths and offsets must be non-empty and of equal length")
        coder = cls.__new__(cls)
        coder.n_tables = len(cdfs)
        coder._cdfs, coder._lengths, coder._offsets = list(cdfs), list(lengths), list(offsets)
        return coder

    def _tables(self, indexes: Tensor) -> tuple[list[int], list, list, list]:
        """(renumbered indexes, and the cdfs, lengths and offsets of just the tables they use)."""
        if indexes.numel() and (int(indexes.min()) < 0 or int(indexes.max()) >= self.n_tables):
            raise ValueError(f"table index out of range 0..{self.n_tables - 1}")
        used, local = torch.unique(indexes.reshape(-1), return_inverse=True)
        used = used.tolist()
        return (
            local.tolist(),
            [self._cdfs[i] for i in used],
            [self._lengths[i] for i in used],
            [self._offsets[i] for i in used],
        )

    def encode(self, symbols: Tensor, indexes: Tensor) -> bytes:
        """Args: symbols, indexes: integer tensors of equal shape. Returns: one rANS string."""
        if symbols.shape != indexes.shape:
            raise ValueError(f"symbols {tuple(symbols.shape)} and indexes {tuple(indexes.shape)} differ in shape")
        if symbols.numel() == 0:
            return b""
        sym = symbols.reshape(-1).to(torch.int64)
        if int(sym.abs().max()) >= 2**30:  # escape coding handles large values, but int32 in the C++ coder
            raise ValueError("symbol magnitude too large for the rANS coder (>= 2^30)")
        return ans.RansEncoder().encode_with_indexes(sym.tolist(), *self._tables(indexes))

    def decode(self, string: bytes, indexes: Tensor) -> Tensor:
        """Args: string from :meth:`encode`; indexes: the same table indexes. Returns: int64 symbols, indexes' shape."""
        if indexes.numel() == 0:
            return torch.zeros(indexes.shape, dtype=torch.int64)
        # The compiled decoder does not bounds-check its input: a short (forged) string would make it read past
        # the end. It reads at most one 32-bit word per symbol/bypass step, so zero padding of that size keeps
        # every read inside our buffer and the result deterministic. Valid strings never reach the padding.
        padded = bytes(string) + bytes(4 * (indexes.numel() + 8))
        values = ans.RansDecoder().decode_with_indexes(padded, *self._tables(indexes))
        return torch.tensor(values, dtype=torch.int64).reshape(indexes.shape)
