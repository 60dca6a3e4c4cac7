"""The Secret type never shows its value."""

import copy
import logging
import pickle

import pytest

from tui.secret import MASK, Secret

CANARY = "918273"


def test_repr_str_format_are_masked():
    secret = Secret(CANARY, "PIV PIN")
    assert CANARY not in repr(secret)
    assert CANARY not in str(secret)
    assert CANARY not in f"{secret}"
    assert CANARY not in f"{secret!r}"
    assert "PIV PIN" in repr(secret)
    assert str(secret) == MASK


def test_secret_in_exception_and_log_is_masked(caplog):
    secret = Secret(CANARY)
    caplog.set_level(1)
    logging.getLogger("keytriage.test").debug("value %s %r", secret, secret)
    error = ValueError(f"bad {secret}")
    assert CANARY not in caplog.text
    assert CANARY not in str(error)


def test_pickle_is_rejected():
    with pytest.raises(TypeError):
        pickle.dumps(Secret(CANARY))


def test_copy_keeps_value_and_mask():
    secret = Secret(b"\x01\x02", "admin key")
    clone = copy.deepcopy(secret)
    assert clone.reveal() == b"\x01\x02"
    assert clone == secret
    assert repr(clone) == repr(secret)


def test_reveal_text_of_binary_raises():
    with pytest.raises(TypeError):
        Secret(b"\x00").reveal_text()


def test_non_text_value_is_rejected():
    with pytest.raises(TypeError):
        Secret(123456)  # type: ignore[arg-type]


def test_secrets_are_unhashable():
    with pytest.raises(TypeError):
        {Secret("1")}
