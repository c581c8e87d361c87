"""CLIP's byte-level BPE tokenizer, as ImageBind's text encoder expects it (77 tokens, SOT ... EOT, zero padded).

Reads the gzipped merges file (``bpe_simple_vocab_16e6.txt.gz``: a header line, then one merge per line).
Text is lower-cased, HTML-unescaped and whitespace-normalised as CLIP does; CLIP's ``ftfy.fix_text``
mojibake repair is not applied (it is the identity on plain ASCII text such as class names).
"""

from __future__ import annotations

import functools
import gzip
import html
from collections.abc import Sequence
from pathlib import Path

import regex
import torch

from asva_model.weights import WeightsError, existing_path

# CLIP keeps the first 49152 - 256 - 2 merges: 256 byte symbols x2 (+ "</w>") + merges + 2 specials = 49408.
MAX_MERGES = 49152 - 256 - 2
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
_WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


@functools.cache
def byte_symbols() -> dict[int, str]:
    """Reversible byte -> printable unicode symbol map, in vocabulary order.

    Printable Latin-1 bytes map to themselves and come first (ids 0..187); the other 68 bytes map to
    chr(256 + k) in byte order after them -- so "!" is id 0 and a space (chr(288)) id 220, as in CLIP/GPT-2.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + k) for k, b in enumerate(others)})
    return table


def read_merges(path: str | Path) -> list[tuple[str, str]]:
    p = existing_path(path, "ImageBind BPE merges (imagebind_bpe)")
    try:
        lines = gzip.open(p, "rt", encoding="utf-8").read().split("\n")
    except OSError as err:
        raise WeightsError(f"imagebind_bpe: {p} is not a gzipped merges file: {err}") from None
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()][:MAX_MERGES]
    bad = next((m for m in merges if len(m) != 2), None)
    if bad is not None:
        raise WeightsError(f"imagebind_bpe: {p}: a merge line must hold two symbols, got {' '.join(bad)!r}")
    return merges  # type: ignore[return-value]


class BPETokenizer:
    def __init__(self, merges: list[tuple[str, str]], context_length: int = 77) -> None:
        symbols = list(byte_symbols().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.context_length = context_length
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def from_file(cls, path: str | Path, context_length: int = 77) -> BPETokenizer:
        return cls(read_merges(path), context_length)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def _bpe(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = {(a, b) for a, b in zip(parts, parts[1:])}
            best = min(pairs, key=lambda pair: self.ranks.get(pair, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self._cache[word] = parts
        return parts

    def encode(self, text: str) -> list[int]:
        text = " ".join(html.unescape(html.unescape(text)).split()).lower()
        ids = []
        for word in _WORD_PATTERN.findall(text):
            word = "".join(byte_symbols()[b] for b in word.encode("utf-8"))
            ids += [self.encoder[piece] for piece in self._bpe(word)]
        return ids

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), context_length) int64 ids: SOT, tokens (truncated), EOT, zeros."""
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = ([self.encoder[SOT]] + self.encode(text))[: self.context_length - 1] + [self.encoder[EOT]]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


def save_merges(path: str | Path, merges: Sequence[tuple[str, str]]) -> Path:
    """Write a merges file in the released format (gzip, header line, one ``a b`` per line)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return p
