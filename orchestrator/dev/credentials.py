"""The dev instance's API key and webhook signing key, kept in its data folder."""

from __future__ import annotations

from orchestrator.auth.keys import authenticate, create_key
from orchestrator.db.session import session_scope
from orchestrator.dev.data_dir import DataDir, read_secret, write_secret

DEV_KEY_NAME = "dev"


def ensure_api_key(data: DataDir, database_url: str) -> str:
    """The key in the data folder if the database still accepts it, else a new admin key."""
    stored = read_secret(data.api_key_file)
    with session_scope(database_url) as session:
        if stored is not None and authenticate(session, stored) is not None:
            return stored
        key = create_key(session, DEV_KEY_NAME, admin=True)
    write_secret(data.api_key_file, key)
    return key


def ensure_signing_key(data: DataDir) -> str:
    """A webhook signing key (ORCH_WEBHOOK_SIGNING_KEY) kept across restarts."""
    from orchestrator.webhooks.signing import new_signing_key

    stored = read_secret(data.signing_key_file)
    if stored is not None:
        return stored
    key = new_signing_key()
    write_secret(data.signing_key_file, key)
    return key
