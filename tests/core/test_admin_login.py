"""The admin log-in: throttled after repeated wrong passwords, and no weak passwords to guess.

alice is the instructor (staff); the guesser tries her name from one address.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client, RequestFactory, override_settings

from core.client_ip import client_ip

PASSWORD = "correct horse battery staple"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture(autouse=True)
def fast_hashing(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed, not the subject


@pytest.fixture
def alice(db: None) -> User:
    return User.objects.create_user("alice", password=PASSWORD, is_staff=True)


def log_in(client: Client, password: str, address: str = "203.0.113.7") -> int:
    response = client.post(LOGIN, {"username": "alice", "password": password}, REMOTE_ADDR=address)
    return response.status_code


def test_it_lets_alice_in_after_a_few_typos(alice: User) -> None:
    client = Client()
    assert [log_in(client, "wrong") for _ in range(4)] == [200] * 4  # the form again, with an error
    assert log_in(client, PASSWORD) == 302


def test_it_locks_out_a_user_and_address_after_five_failures(alice: User) -> None:
    client = Client()
    for _ in range(5):
        log_in(client, "wrong")
    assert log_in(client, PASSWORD) == 429
    assert "_auth_user_id" not in client.session


def test_the_lockout_does_not_reach_alice_at_another_address(alice: User) -> None:
    for _ in range(5):
        log_in(Client(), "wrong", address="203.0.113.7")
    assert log_in(Client(), PASSWORD, address="198.51.100.2") == 302


@override_settings(BEHIND_TLS_PROXY=True)
def test_behind_the_proxy_the_address_is_the_one_the_proxy_saw() -> None:
    # The client sent its own X-Forwarded-For; nginx appended the address it really came from.
    request = RequestFactory().get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.9.9.9, 203.0.113.7")
    assert client_ip(request) == "203.0.113.7"


def test_without_the_proxy_a_forwarded_header_is_ignored() -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR="10.9.9.9")
    assert client_ip(request) == "203.0.113.7"


@pytest.mark.parametrize("password", ["password", "12345678901", "short1!", "alice-alice"])
def test_it_refuses_weak_passwords(password: str) -> None:
    with pytest.raises(ValidationError):
        validate_password(password, user=User(username="alice-alice"))


def test_it_accepts_a_long_uncommon_password() -> None:
    validate_password(PASSWORD, user=User(username="alice"))
