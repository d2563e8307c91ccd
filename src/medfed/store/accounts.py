"""Accounts: users and their passwords, revoked login tokens, and the activity log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from medfed.errors import StoreError
from medfed.store import models as m
from medfed.store.base import StoreBase, check_choice, from_row, jsonable
from medfed.store.passwords import hash_password, verify_password
from medfed.store.records import ActivityRecord, UserRecord
from medfed.store.vocabulary import Role

MIN_PASSWORD_LENGTH = 8


class AccountsMixin(StoreBase):
    """The users, revoked tokens and activity log tables."""

    def add_user(self, name: str, password: str, role: str) -> UserRecord:
        """Create a user with a scrypt-hashed password."""
        check_choice("role", role, Role)
        if not name.strip():
            raise StoreError("a user name cannot be empty")
        _check_password(password)
        user = m.User(name=name, password_hash=hash_password(password), role=role)
        try:
            with self._session() as session:
                session.add(user)
                session.flush()
                return from_row(UserRecord, user)
        except IntegrityError:
            raise StoreError(f"user {name!r} already exists; pick another name") from None

    def verify_user(self, name: str, password: str) -> UserRecord | None:
        """The user when the password is right, else None (same time either way)."""
        with self._session() as session:
            user = session.scalar(select(m.User).where(m.User.name == name))
        matches = verify_password(password, user.password_hash if user else None)
        return from_row(UserRecord, user) if matches and user is not None else None

    def get_user(self, name: str) -> UserRecord | None:
        with self._session() as session:
            user = session.scalar(select(m.User).where(m.User.name == name))
            return None if user is None else from_row(UserRecord, user)

    def set_password(self, name: str, password: str) -> UserRecord:
        """Give ``name`` a new password; every login token issued before stops working."""
        _check_password(password)
        with self._session() as session:
            user = session.scalar(select(m.User).where(m.User.name == name))
            if user is None:
                raise StoreError(f"no user {name!r}; `medfed users list` shows the users")
            user.password_hash = hash_password(password)
            user.token_version = (user.token_version or 0) + 1
            session.flush()
            return from_row(UserRecord, user)

    def revoke_token(self, token_id: str, user: str, expires_at: datetime) -> None:
        """Refuse a login token from now on (until ``expires_at``, when it would have expired
        anyway); tokens already past their expiry are forgotten here."""
        with self._session() as session:
            session.execute(delete(m.RevokedToken).where(m.RevokedToken.expires_at < m.utcnow()))
        try:
            with self._session() as session:
                session.add(m.RevokedToken(token_id=token_id, user=user, expires_at=expires_at))
        except IntegrityError:
            pass  # revoked already

    def session_user(self, name: str, token_id: str) -> tuple[UserRecord | None, bool]:
        """The user a login token names and whether that token was ended by a logout, in
        one round trip (asked on every API request)."""
        revoked = select(m.RevokedToken.token_id).where(m.RevokedToken.token_id == token_id)
        with self._session() as session:
            row = session.execute(
                select(m.User, revoked.exists()).where(m.User.name == name)
            ).first()
            if row is None:
                return None, self.token_revoked(token_id)
            return from_row(UserRecord, row[0]), bool(row[1])

    def token_revoked(self, token_id: str) -> bool:
        """Whether the login token ``token_id`` was ended by a logout."""
        with self._session() as session:
            return session.get(m.RevokedToken, token_id) is not None

    def list_users(self) -> list[UserRecord]:
        with self._session() as session:
            return [
                from_row(UserRecord, u)
                for u in session.scalars(select(m.User).order_by(m.User.name))
            ]

    def log_activity(
        self,
        user: str | None,
        action: str,
        target: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append who did what to which target to the activity log."""
        entry = m.ActivityEntry(
            user=user, action=action, target=target, detail=jsonable(detail, "detail")
        )
        with self._session() as session:
            session.add(entry)

    def activity_log(self, limit: int = 100, offset: int = 0) -> list[ActivityRecord]:
        """Audit entries, newest first."""
        with self._session() as session:
            rows = session.scalars(
                select(m.ActivityEntry)
                .order_by(m.ActivityEntry.at.desc(), m.ActivityEntry.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            return [from_row(ActivityRecord, row) for row in rows]

    def count_activity(self) -> int:
        """How many entries the activity log holds."""
        with self._session() as session:
            return session.scalar(select(func.count()).select_from(m.ActivityEntry)) or 0


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StoreError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
