"""Secret setting values: shown masked in ``repr``/``str``, the real value only on request."""

from __future__ import annotations

import re

from pydantic import SecretStr

# scheme://user:PASSWORD@host — the password is everything between the user's colon and the @.
_PASSWORD_IN_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^@\s/]*@")


def mask_url_password(url: str) -> str:
    """``url`` with the password (if any) replaced by ``***``."""
    return _PASSWORD_IN_URL.sub(r"\1***@", url)


class MaskedUrl(SecretStr):
    """A URL that may carry a password: ``repr`` and ``str`` show it with the password masked
    (the rest stays readable for debugging); :meth:`get_secret_value` is the real URL."""

    def _display(self) -> str:
        return mask_url_password(self.get_secret_value())
