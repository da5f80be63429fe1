"""Codes at rest: sealed with AES-256-GCM when `[codes] keys` are configured.

A sealed code is `~<key id>$<lot>$<base64url(nonce, ciphertext and tag)>`, the SKU and the lot
it was sealed for bound in as associated data: moved to another SKU, or with its lot relabelled,
it no longer opens. The lot is read from the value itself (an order record does not keep which
lot list each code left), so a value moved whole to another lot of the same SKU still opens.
It travels through Redis (stock lists, claims, order records) as it is and is opened only
where a code leaves kamigate: the Order object (answers, replays, webhooks). The key id
names the key that sealed it, so older keys keep opening what they sealed while `kamigate
keys rotate` reseals the stock with the current one. Duplicate detection at import uses a
keyed fingerprint (`fingerprint_key`), so Redis holds no unkeyed hash of a code either.
Without keys, codes are stored as imported and every function here passes them through.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("kamigate.sealing")

PREFIX = "~"
PLAIN_CHECK = "plain"
FINGERPRINT_PROBE = "kamigate:fingerprint-probe"
NONCE_BYTES = 12


class SealError(Exception):
    """A sealed code that no configured key opens (a missing key, or tampering)."""


def decode_key(text: str) -> bytes:
    """A key as configured: 32 bytes in base64 (standard or URL-safe); ValueError else."""
    try:
        raw = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "==")
    except (ValueError, TypeError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"must be 32 bytes (AES-256) in base64, not {len(raw)}")
    return raw


class Sealer:
    """Seals and opens codes with a keyring; a pass-through when no key is configured."""

    def __init__(self, keys: dict[str, bytes] | None = None, current: str = "",
                 fingerprint_key: bytes = b"") -> None:
        self._ciphers = {kid: AESGCM(key) for kid, key in (keys or {}).items()}
        self.current = current if current in self._ciphers else ""
        self._fingerprint_key = fingerprint_key

    @property
    def enabled(self) -> bool:
        return bool(self.current)

    def digest(self, code: str) -> str:
        """The fingerprint import dedupes on (keyed when a fingerprint key is set)."""
        return hashlib.blake2b(code.encode(), digest_size=16,
                               key=self._fingerprint_key[:64]).hexdigest()

    @property
    def fingerprint_check(self) -> str:
        """Names the fingerprint in use without revealing its key: "plain" (unkeyed), or the
        keyed digest of a fixed probe."""
        return self.digest(FINGERPRINT_PROBE) if self._fingerprint_key else PLAIN_CHECK

    def seal(self, sku: str, lot: str, code: str) -> str:
        if not self.current:
            return code
        nonce = os.urandom(NONCE_BYTES)
        box = self._ciphers[self.current].encrypt(nonce, code.encode(), _bound(sku, lot))
        text = base64.urlsafe_b64encode(nonce + box).rstrip(b"=").decode()
        return f"{PREFIX}{self.current}${lot}${text}"

    def open(self, sku: str, stored: str) -> str:
        """The code of a stored value; a value that is not sealed is returned as it is."""
        if not stored.startswith(PREFIX) or stored.count("$") != 2:
            return stored
        kid, lot, text = stored[len(PREFIX):].split("$")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise SealError(f"no key {kid!r} is configured to open codes of {sku}")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                  _bound(sku, lot)).decode()
        except (InvalidTag, ValueError) as exc:
            raise SealError(f"a sealed code of {sku} does not open ({type(exc).__name__})") \
                from None

    def reveal(self, sku: str, stored: list[str]) -> list[str] | None:
        """The codes of stored values; None when one does not open (its key is no longer
        configured, or it was tampered with): the order then says so instead of its codes."""
        if not self._ciphers:
            return stored
        try:
            return [self.open(sku, s) for s in stored]
        except SealError as exc:
            log.error("%s", exc)  # names the SKU and the key id, never a code
            return None

    def key_of(self, stored: str) -> str:
        """The key id a stored value is sealed with ("" when it is not sealed)."""
        if not stored.startswith(PREFIX) or stored.count("$") != 2:
            return ""
        return stored[len(PREFIX):].partition("$")[0]


def _bound(sku: str, lot: str) -> bytes:
    return f"kamigate-code\x00{sku}\x00{lot}".encode()


PLAIN = Sealer()


def sealer_of(keys: dict[str, str], current: str, fingerprint_key: str) -> Sealer:
    """The Sealer of a validated `[codes]` section (see engine/config/credentials.py)."""
    if not keys:
        return PLAIN
    return Sealer({kid: decode_key(k) for kid, k in keys.items()}, current,
                  fingerprint_key.encode())
