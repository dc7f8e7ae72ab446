"""Operator accounts and login sessions, kept in the gateway's shared database.

Passwords are hashed with Argon2id (argon2-cffi, RFC 9106 parameters); hashing runs in a
worker thread so a login never stalls the event loop. A session is a random bearer token
of which only the SHA-256 is stored: a leaked database holds no usable token, and every
gateway instance sharing the database accepts the same sessions.
There is no default account: the first admin is created with `citisense users add`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from citisense_gateway.store.base import Conflict, NotFound
from citisense_gateway.store.sql import Database

# Ordered: each role may do everything the roles before it may.
ROLES = ("viewer", "operator", "technician", "admin")
NAME_RULE = re.compile(r"^[a-z][a-z0-9._-]{1,31}$")
PASSWORD_MIN = 10
PASSWORD_MAX = 256
TOKEN_PREFIX = "cs_"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_users (
  name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL,
  created_at {real} NOT NULL, created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_sessions (
  token_hash TEXT PRIMARY KEY, user_name TEXT NOT NULL, created_at {real} NOT NULL,
  expires_at {real} NOT NULL);
CREATE INDEX IF NOT EXISTS api_sessions_user ON api_sessions (user_name);
"""


class AccountError(ValueError):
    """Input the account rules refuse; names the field and the rule."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    token_hash: str
    expires_at: float


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def check_name(name: str) -> None:
    if not NAME_RULE.match(name):
        raise AccountError("username", "2..32 characters: a-z first, then a-z 0-9 . _ -")


def check_role(role: str) -> None:
    if role not in ROLES:
        raise AccountError("role", f"one of {', '.join(ROLES)}")


def check_password(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise AccountError("password", f"{PASSWORD_MIN}..{PASSWORD_MAX} characters")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _other_admins(rows: list[tuple[object, ...]], name: str) -> int:
    return sum(1 for r in rows if r[0] != name and r[1] == "admin")


def _user(row: tuple[object, ...]) -> User:
    return User(str(row[0]), str(row[1]), float(row[2]), str(row[3]))  # type: ignore[arg-type]


class Accounts:
    """Users and sessions over the store's database adapter (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, *, hasher: PasswordHasher | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.hasher = hasher or PasswordHasher()
        self.clock = clock
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._dummy_hash: str | None = None

    async def open(self) -> None:
        """Create the tables once (safe to call again, and from several instances)."""
        async with self._ready_lock:
            if self._ready:
                return
            async with self.db.transaction() as tx:
                for statement in SCHEMA.format(**self.db.types).split(";"):
                    if statement.strip():
                        await tx.execute(statement)
            self._ready = True

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def _verify(self, stored: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self.hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(verify)

    # -- users ------------------------------------------------------------------------------
    async def add_user(self, name: str, password: str, role: str, *, by: str) -> User:
        check_name(name)
        check_role(role)
        check_password(password)
        await self.open()
        hashed = await self._hash(password)
        user = User(name, role, self.clock(), by)
        try:
            async with self.db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO api_users (name, role, password_hash, created_at, created_by) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (user.name, user.role, hashed, user.created_at, user.created_by),
                )
        except Exception as err:
            if self.db.is_unique_violation(err):
                raise Conflict(f"user {name!r} already exists") from err
            raise
        return user

    async def users(self) -> list[User]:
        await self.open()
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT name, role, created_at, created_by FROM api_users ORDER BY name")
        return [_user(r) for r in rows]

    async def get_user(self, name: str) -> User:
        await self.open()
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT name, role, created_at, created_by FROM api_users WHERE name = ?",
                (name,))
        if not rows:
            raise NotFound(f"user {name!r} does not exist")
        return _user(rows[0])

    async def set_role(self, name: str, role: str) -> User:
        check_role(role)
        user = await self.get_user(name)
        async with self.db.transaction() as tx:
            rows = await tx.fetchall("SELECT name, role FROM api_users")
            if user.role == "admin" and role != "admin" and not _other_admins(rows, name):
                raise Conflict(f"user {name!r} is the last admin; add another admin first")
            await tx.execute("UPDATE api_users SET role = ? WHERE name = ?", (role, name))
        return User(user.name, role, user.created_at, user.created_by)

    async def set_password(self, name: str, password: str, *,
                           keep_session: str | None = None) -> None:
        """New password; every session of the user ends except `keep_session` (a hash)."""
        check_password(password)
        await self.get_user(name)
        hashed = await self._hash(password)
        async with self.db.transaction() as tx:
            await tx.execute("UPDATE api_users SET password_hash = ? WHERE name = ?",
                             (hashed, name))
            await tx.execute(
                "DELETE FROM api_sessions WHERE user_name = ? AND token_hash <> ?",
                (name, keep_session or ""))

    async def remove_user(self, name: str) -> None:
        user = await self.get_user(name)
        async with self.db.transaction() as tx:
            rows = await tx.fetchall("SELECT name, role FROM api_users")
            if user.role == "admin" and not _other_admins(rows, name):
                raise Conflict(f"user {name!r} is the last admin; add another admin first")
            await tx.execute("DELETE FROM api_sessions WHERE user_name = ?", (name,))
            await tx.execute("DELETE FROM api_users WHERE name = ?", (name,))

    # -- sessions ---------------------------------------------------------------------------
    async def _check(self, name: str, password: str) -> tuple[User, str] | None:
        """(user, stored hash) if the password is right; the same work for unknown users."""
        await self.open()
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT name, role, created_at, created_by, password_hash FROM api_users "
                "WHERE name = ?", (name,))
        if not rows:
            # Spend the time a real check takes, so timing does not reveal user names.
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
            await self._verify(self._dummy_hash, password)
            return None
        stored = str(rows[0][4])
        if not await self._verify(stored, password):
            return None
        return _user(rows[0]), stored

    async def check_password(self, name: str, password: str) -> bool:
        return await self._check(name, password) is not None

    async def login(self, name: str, password: str, ttl: float) -> tuple[str, Session] | None:
        """(token, session) for the right password, else None."""
        checked = await self._check(name, password)
        if checked is None:
            return None
        user, stored = checked
        now = self.clock()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        session = Session(user, token_hash(token), now + ttl)
        rehash = self.hasher.check_needs_rehash(stored)
        new_hash = await self._hash(password) if rehash else None
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM api_sessions WHERE expires_at < ?", (now,))
            await tx.execute(
                "INSERT INTO api_sessions (token_hash, user_name, created_at, expires_at) "
                "VALUES (?, ?, ?, ?)", (session.token_hash, user.name, now, session.expires_at))
            if new_hash is not None:
                await tx.execute("UPDATE api_users SET password_hash = ? WHERE name = ?",
                                 (new_hash, user.name))
        return token, session

    async def session(self, token: str) -> Session | None:
        """The live session of a bearer token, or None (unknown, expired, user removed)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            return None
        await self.open()
        hashed = token_hash(token)
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT u.name, u.role, u.created_at, u.created_by, s.expires_at "
                "FROM api_sessions s JOIN api_users u ON u.name = s.user_name "
                "WHERE s.token_hash = ?", (hashed,))
        if not rows or float(rows[0][4]) <= self.clock():
            return None
        return Session(_user(rows[0]), hashed, float(rows[0][4]))

    async def logout(self, session: Session) -> None:
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM api_sessions WHERE token_hash = ?",
                             (session.token_hash,))
