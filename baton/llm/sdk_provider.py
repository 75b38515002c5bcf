"""What the providers that call a vendor SDK share: a named client, built
from the routing file's provider spec, whose faults reach Temporal as
application errors that name the key to check."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Generic, Self, TypeVar

from temporalio.exceptions import ApplicationError

from baton.llm.faults import as_application_error

ClientT = TypeVar("ClientT")


class SdkProvider(ABC, Generic[ClientT]):
    def __init__(self, name: str, client: ClientT, *, key_env: str | None) -> None:
        self.name = name
        self._client = client
        self._key_env = key_env

    @property
    def client(self) -> ClientT:
        """The SDK's client, shared by every kind of call to this provider
        (an Ask's attempts, an Agent's turns: baton.llm.turns_*)."""
        return self._client

    @classmethod
    def from_spec(
        cls, name: str, *, base_url: str | None, key_env: str | None, timeout_s: float
    ) -> Self:
        api_key = os.environ.get(key_env, "") if key_env else None
        client = cls.new_client(base_url=base_url, api_key=api_key, timeout_s=timeout_s)
        return cls(name, client, key_env=key_env)

    @staticmethod
    @abstractmethod
    def new_client(*, base_url: str | None, api_key: str | None, timeout_s: float) -> ClientT:
        """The SDK's client with its own retries off (see baton.llm.faults).
        `api_key` is the value of the spec's key variable, "" when it is unset,
        and None when the spec names no key variable."""

    def failure(self, err: Exception, model: str) -> ApplicationError:
        return as_application_error(err, provider=self.name, model=model, key_env=self._key_env)
