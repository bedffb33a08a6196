"""Who calls the server: users from the config, each with a role, a share of the devices
(weight) and quotas. A caller presents a token; the server keeps only the tokens' SHA-256, so
a config may hold hashes instead of secrets. Without any users or tokens, auth is off and
every caller is one local admin (a single artist's own machine).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from artforge.config import Config, UserEntry, load_users_file
from artforge.errors import ArtForgeError, ErrorCode

ADMIN, ARTIST = "admin", "artist"


@dataclass(frozen=True)
class Quota:
    """0 means no limit."""

    max_queued_jobs: int = 0
    max_running_jobs: int = 0
    device_seconds_per_hour: float = 0.0
    device_seconds_burst: float = 0.0  # the bucket's size; 0: an hour's worth
    max_image_pixels: int = 0

    @property
    def bucket_seconds(self) -> float:
        return self.device_seconds_burst or self.device_seconds_per_hour


@dataclass(frozen=True)
class User:
    name: str
    role: str = ARTIST
    weight: float = 1.0
    quota: Quota = field(default_factory=Quota)

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


# Auth off: every caller is this one user.
LOCAL = User("local", role=ADMIN)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(entry: UserEntry) -> User:
    quota = Quota(
        entry.max_queued_jobs,
        entry.max_running_jobs,
        entry.device_seconds_per_hour,
        entry.device_seconds_burst,
        entry.max_image_pixels,
    )
    return User(entry.name, entry.role, entry.weight, quota)


class Users:
    """The users a server knows, by name and by token hash; replaced whole on reload, so a
    lookup never sees half of an old file and half of a new one."""

    def __init__(self, entries: list[UserEntry], tokens: dict[str, str]) -> None:
        """`tokens`: the plain `[auth] tokens` map (name = token), artists of weight 1."""
        users: dict[str, User] = {}
        hashes: dict[str, str] = {}
        plain = [UserEntry(name, token=token) for name, token in tokens.items()]
        for entry in [*plain, *entries]:
            if entry.name in users:
                raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"config: user {entry.name!r} is given twice")
            digest = (entry.token_sha256 or token_hash(entry.token)).lower()
            if digest in hashes:
                raise ArtForgeError(ErrorCode.INVALID_ARGUMENT, f"config: users {hashes[digest]!r} and {entry.name!r} have the same token")
            users[entry.name], hashes[digest] = _user(entry), entry.name
        self._by_name = users
        self._by_hash = hashes

    @classmethod
    def from_config(cls, config: Config) -> Users:
        """The config's `[users.NAME]` and `[auth] tokens`, and the `[auth] users_file` read now
        (at start, and again on SIGHUP)."""
        from_file = load_users_file(Path(config.users_file).expanduser()) if config.users_file else []
        return cls([*config.users, *from_file], config.tokens)

    @property
    def enabled(self) -> bool:
        return bool(self._by_name)

    def by_token(self, presented: str) -> User | None:
        # Looked up by the token's hash: what a lookup's timing could reveal is of the hash.
        name = self._by_hash.get(token_hash(presented))
        return None if name is None else self._by_name[name]

    def get(self, name: str) -> User:
        """A user by name; one no longer configured (removed on reload) is a plain artist, so
        their jobs already queued still run."""
        if not self.enabled:
            return LOCAL
        return self._by_name.get(name) or User(name)

    def __iter__(self) -> Iterator[User]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)
