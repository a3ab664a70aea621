"""The one rule for secrets in what callers send: which keys and values are never stored, logged or echoed.

A key is secret when one of its words (split on `_`, `-`, `.` and camelCase) always means a credential
(`secret(s)`, `password`, `authorization`, `credentials`, `apikey`, `cookie`, ...), when its last word is a
credential noun (`token`, `key`, `auth`, `pat`: `hf_token`, `hub_key`, `x_auth`), or when the words run
together into one (`apiKey`, `access_key_id`, `private_key`). A secret key takes its whole value with it, so a
nested `secrets:` block goes as one. ai-toolkit's real keys that merely contain such a word keep working:
`keep_tokens` and `shuffle_tokens` (plural, not a credential), `token_dropout_rate` and `max_token_length`
(the word is not last). Values are checked too: text shaped like a well-known credential (a Hugging Face,
GitHub, OpenAI or AWS key, a bearer header) is redacted under any key. Erring on the side of redaction:
a false positive drops a setting with a warning; a false negative would leak a credential.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"

_ALWAYS = frozenset(
    {
        "secret",
        "secrets",
        "password",
        "passwd",
        "passphrase",
        "credential",
        "credentials",
        "creds",
        "authorization",
        "apikey",
        "cookie",
        "cookies",
        "bearer",
    }
)
_LAST = frozenset({"token", "key", "auth", "pat", "pwd", "signature"})
_JOINED = ("apikey", "accesskey", "secretkey", "privatekey", "authtoken", "accesstoken", "sessiontoken")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_CREDENTIAL_VALUE = re.compile(
    r"\bhf_[A-Za-z0-9]{30,}|\bgh[pousr]_[A-Za-z0-9]{30,}|\bsk-[A-Za-z0-9_-]{20,}|\bAKIA[0-9A-Z]{16}\b"
    r"|^\s*(Bearer|Basic)\s+\S{8,}",
    re.IGNORECASE,
)


def key_words(key: str) -> list[str]:
    """A key's words, lower case: 'hubKey' and 'hub-key' both give ['hub', 'key']."""
    return [word.lower() for word in _WORD.findall(key)]


def is_secret_key(key: str) -> bool:
    """Whether a field of this name holds a credential (see the module's rule)."""
    words = key_words(key)
    if not words:
        return False
    if _ALWAYS.intersection(words) or words[-1] in _LAST:
        return True
    joined = "".join(words)
    return any(part in joined for part in _JOINED)


def is_secret_value(value: Any) -> bool:
    """Whether a text looks like a well-known credential, whatever its key."""
    return isinstance(value, str) and _CREDENTIAL_VALUE.search(value) is not None


def redact(value: Any) -> Any:
    """A copy with secret keys' values and credential-shaped texts replaced by '[redacted]'."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if is_secret_value(value):
        return REDACTED
    return value
