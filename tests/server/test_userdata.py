"""The users' folders behind ComfyUI's app routes (``service_userdata.py``): users, per-user settings and
files, with and without ``--multi-user``."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from atelier.engine.server.service_userdata import (
    DEFAULT_USER,
    UnknownUser,
    UnsafePathError,
    UserDataService,
    UserRefused,
)


def test_single_user_ignores_the_header_and_adds_no_users(tmp_path: Path) -> None:
    data = UserDataService(tmp_path)
    assert data.users() == {DEFAULT_USER: DEFAULT_USER}
    assert data.user_of(None) == data.user_of("ann") == DEFAULT_USER
    with pytest.raises(UserRefused, match="--multi-user"):
        data.add_user("ann")
    assert not (tmp_path / "users.json").exists()


def test_multi_user_folders_are_separate(tmp_path: Path) -> None:
    data = UserDataService(tmp_path, multi_user=True)
    assert data.users() == {}
    with pytest.raises(UnknownUser):
        data.user_of(None)  # no default user in multi-user mode until one is created
    ann = data.add_user("Ann Lee")
    bob = data.add_user("bob")
    assert ann.startswith("Ann-Lee_") and bob.startswith("bob_") and ann != bob
    assert data.users() == {ann: "Ann Lee", bob: "bob"}
    assert json.loads((tmp_path / "users.json").read_text()) == {ann: "Ann Lee", bob: "bob"}
    with pytest.raises(UserRefused, match="Duplicate"):
        data.add_user("bob")
    for bad in ("", "   ", "__system", "__"):
        with pytest.raises(UserRefused):
            data.add_user(bad)
    assert data.user_of(ann) == ann
    for unknown in ("nobody", "__system", "../" + ann):
        with pytest.raises(UnknownUser):
            data.user_of(unknown)

    data.update_settings(ann, {"Comfy.Theme": "light"})
    data.update_settings(bob, {"Comfy.Theme": "dark"})
    assert data.settings(ann) == {"Comfy.Theme": "light"} and data.settings(bob) == {"Comfy.Theme": "dark"}
    data.write(ann, "workflows/a.json", b"{}")
    assert (tmp_path / ann / "workflows" / "a.json").read_bytes() == b"{}"
    with pytest.raises(UnsafePathError):
        data.path(bob, f"../{ann}/workflows/a.json")
    with pytest.raises(UnsafePathError):
        data.move(ann, "workflows/a.json", f"../{bob}/stolen.json")
    # "." is the user's own folder
    assert data.list_files(bob, ".") == (tmp_path / bob, [tmp_path / bob / "comfy.settings.json"])


def test_concurrent_setting_updates_all_land(tmp_path: Path) -> None:
    data = UserDataService(tmp_path)
    threads = [
        threading.Thread(target=data.update_settings, args=(DEFAULT_USER, {f"k{i}": i})) for i in range(24)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert data.settings(DEFAULT_USER) == {f"k{i}": i for i in range(24)}
    # no temporary file is left behind
    assert [p.name for p in (tmp_path / DEFAULT_USER).iterdir()] == ["comfy.settings.json"]


def test_unreadable_settings_are_an_error_not_an_empty_object(tmp_path: Path) -> None:
    data = UserDataService(tmp_path)
    (tmp_path / DEFAULT_USER).mkdir()
    (tmp_path / DEFAULT_USER / "comfy.settings.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="comfy.settings.json"):
        data.settings(DEFAULT_USER)
    with pytest.raises(RuntimeError):
        data.update_settings(DEFAULT_USER, {"a": 1})  # never overwrites what it could not read
    assert (tmp_path / DEFAULT_USER / "comfy.settings.json").read_text() == "{not json"
