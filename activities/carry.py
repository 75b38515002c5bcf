"""The worker's seal on a run carried into a fresh history (see baton/carry.py).

Every worker of a deployment must hold the same secret, so that a run sealed
by one is resumed by another: set ``BATON_WORKER_SEAL_KEY`` from a secret
store. Without it a worker keeps one in its data dir, made once (mode 0600),
which serves a deployment of one machine such as the embedded one.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from pathlib import Path

from temporalio import activity

from baton.carry import CHECK_SEAL_ACTIVITY, SEAL_ACTIVITY, SealCheck
from baton.config import Settings
from baton.keys import kept_secret

SEAL_KEY_ENV = "BATON_WORKER_SEAL_KEY"
SEAL_KEY_FILE = "worker-seal.key"
# Keeps a seal from being taken for any other MAC the same secret might make.
_PURPOSE = b"baton carried run\x00"


@functools.cache
def _secret(explicit: str | None, data_dir: Path) -> bytes:
    return (explicit or kept_secret(data_dir / SEAL_KEY_FILE)).encode()


def seal_for(digest: str) -> str:
    secret = _secret(os.environ.get(SEAL_KEY_ENV), Settings.from_env().data_dir)
    return hmac.new(secret, _PURPOSE + digest.encode(), hashlib.sha256).hexdigest()


# Async: a MAC is microseconds, and the secret is read from disk once per worker.
@activity.defn(name=SEAL_ACTIVITY)
async def seal_carried_run(digest: str) -> str:
    return seal_for(digest)


@activity.defn(name=CHECK_SEAL_ACTIVITY)
async def check_carried_run(check: SealCheck) -> bool:
    return hmac.compare_digest(seal_for(check.digest), check.seal)
