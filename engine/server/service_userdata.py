"""Per-user files on the server: ComfyUI's user folders (settings, saved workflows, anything a frontend
stores with ``/userdata``).

Every user has a folder under the users root (``--user-dir``, default ``user/`` next to the database):
``default`` for the single user, or one per user created with ``POST /users`` when the server runs with
``--multi-user``. Settings are one JSON object per user in ``comfy.settings.json`` (ComfyUI's file name, so
a ComfyUI user folder can be used as it is). Every file name from a request goes through
``resolve_inside``: nothing is read, written, moved or deleted outside the user's folder. Writes land in a
temporary file first and then take their name, so a reader never sees half a file.

No HTTP here (``comfy/app_routes.py`` gives it ComfyUI's shapes); methods block on the file system and are
called from worker threads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atelier.engine.folders import UnsafePathError, resolve_inside

DEFAULT_USER = "default"
SETTINGS_FILE = "comfy.settings.json"
USERS_FILE = "users.json"
#: folders of this prefix are the server's own, never a user's (as in ComfyUI)
SYSTEM_PREFIX = "__"

__all__ = [
    "DEFAULT_USER",
    "FileInfo",
    "UnknownUser",
    "UnsafePathError",
    "UserDataService",
    "UserRefused",
]


class UnknownUser(LookupError):
    """A request names a user this server does not know."""


class UserRefused(ValueError):
    """A user name that cannot be created (empty, taken, or a system name)."""


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the folder listed (or the user's folder), with ``/``
    size: int
    modified: int  # milliseconds since the epoch
    created: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "modified": self.modified, "created": self.created}


def file_info(path: Path, relative_to: Path) -> FileInfo:
    st = path.stat()
    return FileInfo(
        path=path.relative_to(relative_to).as_posix(),
        size=st.st_size,
        modified=int(st.st_mtime * 1000),
        created=int(st.st_ctime * 1000),
    )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class UserDataService:
    """The users root and the files of each user in it."""

    def __init__(self, root: Path, multi_user: bool = False) -> None:
        self.root = root
        self.multi_user = multi_user
        self._lock = threading.Lock()  # settings and users.json are read-modify-write

    # -- users ---------------------------------------------------------------------------------------

    def users(self) -> dict[str, str]:
        """User id -> name. Without ``multi_user`` there is one user, ``default``."""
        if not self.multi_user:
            return {DEFAULT_USER: DEFAULT_USER}
        path = self.root / USERS_FILE
        try:
            users = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read {path}: {exc}") from exc
        return {str(k): str(v) for k, v in users.items()} if isinstance(users, dict) else {}

    def user_of(self, requested: str | None) -> str:
        """The user a request acts for: the ``Comfy-User`` header's user with ``multi_user``, else
        ``default``. ``UnknownUser`` when that user does not exist."""
        user = requested if self.multi_user and requested else DEFAULT_USER
        if user.startswith(SYSTEM_PREFIX) or user not in self.users():
            raise UnknownUser(f"unknown user {user!r}")
        return user

    def add_user(self, name: str) -> str:
        """Create a user (``multi_user`` only) and return its id: the name reduced to letters, digits,
        ``-`` and ``_``, plus a unique suffix."""
        if not self.multi_user:
            raise UserRefused("this server has a single user (start it with --multi-user to add users)")
        name = name.strip()
        if not name:
            raise UserRefused("username not provided")
        user_id = re.sub(r"[^a-zA-Z0-9_-]+", "-", name)
        if name.startswith(SYSTEM_PREFIX) or user_id.startswith(SYSTEM_PREFIX):
            raise UserRefused(f"user names may not start with {SYSTEM_PREFIX!r}")
        with self._lock:
            users = self.users()
            if name in users.values():
                raise UserRefused("Duplicate username.")
            user_id = f"{user_id}_{uuid.uuid4()}"
            users[user_id] = name
            _write_atomic(self.root / USERS_FILE, json.dumps(users, indent=2).encode())
        return user_id

    def folder(self, user: str) -> Path:
        """The user's folder (it may not exist yet)."""
        return resolve_inside(self.root, user)

    def has_folder(self, user: str) -> bool:
        return self.folder(user).is_dir()

    # -- files ---------------------------------------------------------------------------------------

    def path(self, user: str, name: str) -> Path:
        """A file or folder of the user by relative name; ``UnsafePathError`` for names that would leave
        the user's folder (absolute, ``..`` beyond it, a drive, a NUL)."""
        return resolve_inside(self.folder(user), name)

    def list_files(self, user: str, directory: str, recurse: bool = False) -> tuple[Path, list[Path]] | None:
        """The folder and its files (recursively, sorted), or None when the folder does not exist."""
        base = self.path(user, directory)
        if not base.is_dir():
            return None
        found = base.rglob("*") if recurse else base.glob("*")
        return base, sorted(p for p in found if p.is_file() and not p.name.startswith(".tmp-"))

    def list_tree(self, user: str, directory: str) -> list[dict[str, Any]] | None:
        """ComfyUI's ``/v2/userdata`` listing: every folder and file below ``directory`` with paths from
        the user's folder, folders first, by name; None when it does not exist; [] for a new user."""
        user_root = self.folder(user)
        base = self.path(user, directory) if directory else user_root
        if not base.exists():
            return [] if base == user_root else None
        if not base.is_dir():
            raise NotADirectoryError(directory)
        out: list[dict[str, Any]] = []
        for p in base.rglob("*"):
            rel = p.relative_to(user_root).as_posix()
            if p.is_dir():
                out.append({"name": p.name, "path": rel, "type": "directory"})
            elif p.is_file() and not p.name.startswith(".tmp-"):
                st = p.stat()
                out.append(
                    {"name": p.name, "path": rel, "type": "file", "size": st.st_size, "modified": st.st_mtime}
                )
        out.sort(key=lambda e: (e["type"] != "directory", e["name"].lower()))
        return out

    def write(self, user: str, name: str, data: bytes, overwrite: bool = True) -> Path | None:
        """Write a file; None when it exists and ``overwrite`` is false."""
        path = self.path(user, name)
        if path == self.folder(user) or path.is_dir():
            raise IsADirectoryError(name)
        if not overwrite and path.exists():
            return None
        _write_atomic(path, data)
        return path

    def delete(self, user: str, name: str) -> bool:
        path = self.path(user, name)
        if not path.is_file():
            return False
        path.unlink()
        return True

    def move(self, user: str, source: str, dest: str, overwrite: bool = True) -> Path | None:
        """Move a file within the user's folder; ``FileNotFoundError`` when the source is missing, None
        when the destination exists and ``overwrite`` is false."""
        src, dst = self.path(user, source), self.path(user, dest)
        if not src.is_file():
            raise FileNotFoundError(source)
        if dst == self.folder(user) or dst.is_dir():
            raise IsADirectoryError(dest)
        if not overwrite and dst.exists():
            return None
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, dst)
        return dst

    # -- settings ------------------------------------------------------------------------------------

    def settings(self, user: str) -> dict[str, Any]:
        path = self.path(user, SETTINGS_FILE)
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read the settings in {path}: {exc}") from exc
        return value if isinstance(value, dict) else {}

    def update_settings(self, user: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the user's settings and save them; returns the settings."""
        with self._lock:
            merged = {**self.settings(user), **changes}
            _write_atomic(self.path(user, SETTINGS_FILE), json.dumps(merged, indent=4).encode())
        return merged
