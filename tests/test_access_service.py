"""studio.access.service.Access over a real store: sign-in with throttling, roles, passwords,
and who may read which file of the data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.access.audit import Audit
from studio.access.service import Access
from studio.access.sessions import Sessions
from studio.access.users import Users
from studio.access.web import SignInRefused
from studio.errors import InvalidInput


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def access(store):
    users = Users(store)
    users.add("ann", "ann-password-1", admin=True)
    users.add("bob", "bob-password-1")
    clock = Clock()
    access = Access(users, Sessions(store, lifetime_s=3600), Audit(store, keep_days=30),
                    no_auth=False, session_days=1,
                    file_owner=lambda path: path.name.split("-", 1)[0], clock=clock)
    access.clock = clock
    return access


def test_access_sign_in_gives_a_session_and_audits_it(access):
    token = access.sign_in("bob", "bob-password-1", address="10.0.0.7")
    assert access.user_for(token) == "bob"
    entry = access.audit.recent(1)[0]
    assert (entry.user, entry.action, entry.address) == ("bob", "sign-in", "10.0.0.7")
    access.sign_out(token, address="10.0.0.7")
    assert access.user_for(token) is None


@pytest.mark.parametrize("name, password", [("bob", "wrong"), ("nobody", "bob-password-1"),
                                            ("bob", ""), ("", "")])
def test_access_wrong_sign_in_is_one_sentence(access, name, password):
    with pytest.raises(SignInRefused, match="^Wrong name or password.$"):
        access.sign_in(name, password, address="10.0.0.7")
    assert access.audit.recent(1)[0].action == "sign-in failed"


def test_access_repeated_failures_pause_sign_in_from_that_address(access):
    for _ in range(5):
        with pytest.raises(SignInRefused, match="Wrong"):
            access.sign_in("bob", "wrong", address="10.0.0.7")
    with pytest.raises(SignInRefused, match="Too many failed sign-ins. Try again in 10 minutes"):
        access.sign_in("bob", "bob-password-1", address="10.0.0.7")
    with pytest.raises(SignInRefused, match="Too many"):  # the name is paused too
        access.sign_in("bob", "bob-password-1", address="10.0.0.8")
    assert access.sign_in("ann", "ann-password-1", address="10.0.0.9")
    access.clock.now += 601
    assert access.sign_in("bob", "bob-password-1", address="10.0.0.7")


def test_access_roles(access):
    assert access.role_of("ann") == "admin" and access.role_of("bob") == "user"
    assert access.role_of("nobody") is None and access.role_of(None) is None
    assert access.is_admin("ann") and not access.is_admin("bob")


def test_access_without_users_everyone_is_the_admin_owner(store):
    open_access = Access(Users(store), Sessions(store, lifetime_s=60), Audit(store, keep_days=1),
                         no_auth=False, session_days=1, file_owner=lambda p: None)
    assert not open_access.sign_in_required() and open_access.role_of(None) == "admin"


def test_access_change_password(access):
    with pytest.raises(InvalidInput, match="current password is wrong"):
        access.change_password("bob", "nope", "new-password-2", "new-password-2")
    with pytest.raises(InvalidInput, match="differ"):
        access.change_password("bob", "bob-password-1", "new-password-2", "new-password-3")
    other_device = access.sign_in("bob", "bob-password-1", address="a")
    this_device = access.sign_in("bob", "bob-password-1", address="b")
    access.change_password("bob", "bob-password-1", "new-password-2", "new-password-2",
                           session=this_device)
    assert access.users.verify("bob", "new-password-2") is not None
    assert access.user_for(other_device) is None
    assert access.user_for(this_device) == "bob"  # the device that changed it stays in


def test_access_files_only_for_their_owner(access):
    assert access.may_read_file("bob", Path("/d/outputs/bob-1.png"))
    assert not access.may_read_file("bob", Path("/d/outputs/ann-1.png"))


def test_access_admins_manage_people_and_it_is_audited(access):
    access.add_user("ann", "cy", "cy-password-1", admin=False)
    assert access.role_of("cy") == "user"
    token = access.sign_in("cy", "cy-password-1")
    access.reset_password("ann", "cy", "cy-password-2")
    assert access.user_for(token) is None
    with pytest.raises(InvalidInput, match="can't remove yourself"):
        access.remove_user("ann", "ann")
    access.remove_user("ann", "cy")
    assert access.role_of("cy") is None
    actions = [(e.user, e.action, e.detail) for e in access.audit.recent(10)]
    assert ("ann", "remove user", "cy") in actions and ("ann", "add user", "cy (user)") in actions
    assert not any("password-" in detail for _, _, detail in actions)
