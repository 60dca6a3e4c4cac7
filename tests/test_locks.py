"""Per-token operation locks."""

import pytest

from tui.errors import TokenBusyError
from tui.locks import TokenLocks


def test_second_operation_on_same_token_is_refused():
    locks = TokenLocks()
    with locks.hold("cplc:A", "PUK reset"):
        assert locks.busy_with("cplc:A") == "PUK reset"
        with pytest.raises(TokenBusyError, match="PUK reset"):
            with locks.hold("cplc:A", "verify"):
                pass
    assert locks.busy_with("cplc:A") is None


def test_other_token_is_free():
    locks = TokenLocks()
    with locks.hold("cplc:A", "PUK reset"):
        with locks.hold("cplc:B", "verify"):
            assert locks.any_held()
    assert not locks.any_held()


def test_lock_released_on_error():
    locks = TokenLocks()
    with pytest.raises(RuntimeError):
        with locks.hold("cplc:A", "x"):
            raise RuntimeError("boom")
    assert locks.busy_with("cplc:A") is None
