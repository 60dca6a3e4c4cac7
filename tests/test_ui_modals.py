"""The shared modals: letter keys, typed confirmation, masked entry that Enter only checks."""

from textual.app import App

from tui.secret import Secret
from tui.ui.modals import DIGITS_ONLY, ConfirmModal, ErrorModal, SecretPromptModal


class ModalHost(App):
    """An empty app that pushes one modal and keeps its result."""

    def __init__(self, modal):
        super().__init__()
        self.modal = modal
        self.results = []

    def on_mount(self):
        self.push_screen(self.modal, self.results.append)


async def test_confirm_cancel_with_n():
    app = ModalHost(ConfirmModal("Reset", "Wipe it?"))
    async with app.run_test() as pilot:
        await pilot.press("n")
    assert app.results == [False]


async def test_confirm_accept_with_named_key():
    app = ModalHost(ConfirmModal("Verify", "Send one VERIFY?", confirm_key="s"))
    async with app.run_test() as pilot:
        await pilot.press("enter")
        assert app.results == []
        await pilot.press("s")
    assert app.results == [True]


async def test_typed_confirmation_must_match():
    app = ModalHost(ConfirmModal("Reset", "Wipe?", confirm_key="w", confirm_label="Wipe", typed_confirmation="3C4D"))
    async with app.run_test() as pilot:
        await pilot.press("3", "C", "4", "X", "enter", "w")
        assert app.results == []
        assert "does not match" in str(app.screen.query_one("#modal-error").render())
        app.screen.query_one("#typed-confirmation").value = "3C4D"
        await pilot.press("enter", "w")
    assert app.results == [True]


async def test_secret_prompt_enter_checks_then_s_sends():
    checked = []

    def validate(secret):
        checked.append(len(secret))
        return None if len(secret) >= 6 else f"the PIN has {len(secret)} digits; this key needs 6 to 8"

    app = ModalHost(SecretPromptModal("Verify", "PIN the user claims", kind="PIV PIN", restrict=DIGITS_ONLY, max_length=8, validate=validate))
    async with app.run_test() as pilot:
        await pilot.press("1", "2", "3", "enter")
        assert "6 to 8" in str(app.screen.query_one("#modal-error").render())
        await pilot.press("s")  # typed into the field, which the digits-only rule rejects
        assert app.results == []
        await pilot.press("4", "5", "6", "enter", "s")
    assert len(app.results) == 1
    assert isinstance(app.results[0], Secret)
    assert app.results[0].reveal() == "123456"
    assert checked == [3, 6]


async def test_secret_prompt_rejects_escape_sequence_paste():
    from textual import events

    app = ModalHost(SecretPromptModal("Verify", "PIN", kind="PIV PIN", restrict=DIGITS_ONLY, max_length=8))
    async with app.run_test() as pilot:
        field = app.screen.query_one("#secret-input")
        field.post_message(events.Paste("\x1b[<35;10;5M123456"))
        await pilot.pause()
        assert field.value == ""
        await pilot.press("escape")
    assert app.results == [None]


async def test_secret_prompt_confirm_before_check_does_nothing():
    app = ModalHost(SecretPromptModal("Verify", "PIN", kind="PIV PIN", restrict=DIGITS_ONLY))
    async with app.run_test() as pilot:
        app.screen.set_focus(None)
        await pilot.press("s")
        assert app.results == []
        assert "Enter" in str(app.screen.query_one("#modal-error").render())


async def test_error_modal_closes_with_o():
    app = ModalHost(ErrorModal("Escrow refused", "Vault is sealed"))
    async with app.run_test() as pilot:
        await pilot.press("o")
    assert app.results == [None]


async def test_show_once_ignores_escape():
    from tui.ui.modals import ShowOnceModal

    app = ModalHost(ShowOnceModal("New PIN", "New PIN", Secret("4711"), "Escrowed at lab/x, version 2."))
    async with app.run_test() as pilot:
        await pilot.press("escape")
        assert app.results == []
        await pilot.press("d")
    assert app.results == [None]
