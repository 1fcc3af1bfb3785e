"""Encrypt device credentials the way a the-other-dude backend stores them, for
tests/it/tod_sync.rs: an implementation independent of ours (Python's `cryptography`,
which the backend uses).

The key is standard base64 of 32 bytes in the TOD_KEY environment variable; stdin is a
JSON array of plaintexts; stdout is a JSON array of base64 ciphertexts, each
nonce (12 random bytes) || AES-256-GCM ciphertext || tag, without associated data.
"""

import base64
import json
import os
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def main() -> None:
    key = base64.b64decode(os.environ["TOD_KEY"], validate=True)
    aead = AESGCM(key)
    sealed = []
    for text in json.load(sys.stdin):
        nonce = os.urandom(12)
        blob = nonce + aead.encrypt(nonce, text.encode("utf-8"), None)
        sealed.append(base64.b64encode(blob).decode("ascii"))
    json.dump(sealed, sys.stdout)


if __name__ == "__main__":
    main()
