"""Screens of the escrow feature: a letter-key choice, the Vault login form and the outcome view.

Like the shared modals, each has a letter key for every way out, because a
lone Escape can be lost over slow SSH and tmux links. The login form keeps
the password or token in a masked Input and clears it after each attempt. A
successful login keeps the token only in the escrow context, in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from tui.errors import KeytriageError
from tui.escrow.config import TokenInfo
from tui.escrow.errors import VaultTokenError, VaultUnavailableError
from tui.secret import Secret

# Vault user names end up in the login URL path, so "/" and spaces are rejected while typing.
USERNAME_CHARACTERS = r"[A-Za-z0-9._@+-]*"
TOKEN_CHARACTERS = r"[ -~]*"
MAX_USERNAME = 128
MAX_PASSWORD = 256

LOGIN_METHOD_LABELS = {"token": "Vault token", "userpass": "userpass", "ldap": "LDAP"}


@dataclass(frozen=True)
class Choice:
    """One way out of a `ChoiceModal`: its key, the words after the key, and the value returned."""

    key: str
    label: str
    value: Any


class ChoiceModal(ModalScreen[Any]):
    """Offer a few choices, each on a letter key; `n` or Escape returns None."""

    BINDINGS = [Binding("n,escape", "cancel", "Cancel", id="choice-cancel")]

    def __init__(self, title: str, body: str, choices: Sequence[Choice], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title_text = title
        self.body = body
        self.choices = list(choices)
        for choice in self.choices:
            self._bindings.bind(choice.key, f"choose('{choice.key}')", choice.label)

    def compose(self) -> ComposeResult:
        lines = [f"[{choice.key}] {choice.label}" for choice in self.choices] + ["[n] Cancel"]
        with Vertical(classes="modal-dialog"):
            yield Static(self.body, classes="modal-body", markup=False)
            yield Static("\n".join(lines), classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text

    def action_choose(self, key: str) -> None:
        """Dismiss with the value of the choice on `key`."""
        for choice in self.choices:
            if choice.key == key:
                self.dismiss(choice.value)
                return

    def action_cancel(self) -> None:
        """Dismiss with None."""
        self.dismiss(None)


class OutcomeModal(ModalScreen[None]):
    """The result of an escrowed action in words; `o`, Enter or Escape closes it."""

    BINDINGS = [Binding("o,escape,enter", "close", "OK", id="outcome-close")]

    def __init__(self, title: str, message: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title_text = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-dialog"):
            yield Static(self.message, id="outcome-text", classes="modal-body", markup=False)
            yield Static("[o] OK", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = self.title_text

    def action_close(self) -> None:
        """Close the view."""
        self.dismiss(None)


LoginFunction = Callable[..., TokenInfo]


def login_error_words(method: str, error: Exception) -> str:
    """Word a failed login with what to do next; the error messages carry no secret."""
    if isinstance(error, VaultUnavailableError):
        return f"Vault is not usable: {error}"
    if isinstance(error, VaultTokenError) and method == "ldap":
        return f"The LDAP login was refused. {error} If the password is right, ask the Vault administrators to check the LDAP auth method."
    if isinstance(error, VaultTokenError) and method == "token":
        return f"{error} Paste a current token, or log in with userpass or LDAP."
    return str(error)


class VaultLoginScreen(ModalScreen[TokenInfo | None]):
    """Log in to Vault with a token, userpass or LDAP; dismiss with the new token's info, or None.

    `login(method, secret=..., username=..., mount=...)` is the blocking login
    of the escrow context; it runs in a thread so the event loop stays free.
    Enter moves from the user name to the password and then checks the form;
    `s` logs in. The masked field is cleared after every attempt.
    """

    BINDINGS = [Binding("n,escape", "cancel", "Cancel", id="vault-login-cancel")]

    def __init__(self, method: str, address: str, login: LoginFunction, *, username: str = "",
                 mount: str | None = None) -> None:
        super().__init__(id="vault-login")
        self.method = method
        self.address = address
        self.login_function = login
        self.username = username
        self.auth_mount = mount
        self.info: TokenInfo | None = None
        self.busy = False
        self._ready = False
        self._bindings.bind("s", "submit", "Log in")
        self._bindings.bind("o", "done", "OK")

    @property
    def needs_username(self) -> bool:
        """True for userpass and LDAP."""
        return self.method != "token"

    def compose(self) -> ComposeResult:
        label = LOGIN_METHOD_LABELS[self.method]
        secret_name = "Vault token" if self.method == "token" else "password"
        body = f"Log in to Vault at {self.address} with {label}. The token is kept in memory only, never written to disk."
        with Vertical(classes="modal-dialog"):
            yield Static(body, classes="modal-body", markup=False)
            if self.needs_username:
                yield Input(self.username, restrict=USERNAME_CHARACTERS, max_length=MAX_USERNAME, id="login-username",
                            classes="modal-input", placeholder="user name")
            yield Input(password=True, restrict=TOKEN_CHARACTERS, max_length=MAX_PASSWORD, id="login-secret",
                        classes="modal-input", placeholder=f"{secret_name} (hidden)")
            yield Static("", id="login-error", classes="modal-error", markup=False)
            yield Static("Enter: next field, then check    [s] Log in    [n] Cancel", id="login-keys", classes="modal-keys", markup=False)

    def on_mount(self) -> None:
        self.query_one(".modal-dialog").border_title = "Vault login"
        first = "#login-username" if self.needs_username and not self.username else "#login-secret"
        self.query_one(first, Input).focus()

    def _say(self, text: str) -> None:
        self.query_one("#login-error", Static).update(text)

    @on(Input.Submitted, "#login-username")
    def _username_submitted(self) -> None:
        self.query_one("#login-secret", Input).focus()

    @on(Input.Submitted, "#login-secret")
    def _secret_submitted(self) -> None:
        problem = self._form_problem()
        if problem:
            self._say(problem)
            return
        self._ready = True
        self._say("Checked. Press s to log in, n to cancel.")
        self.set_focus(None)  # the letter keys now reach the screen instead of the input

    @on(Input.Changed)
    def _changed(self) -> None:
        self._ready = False

    def _form_problem(self) -> str | None:
        if self.needs_username and not self.query_one("#login-username", Input).value:
            return "The user name is missing: type it in the first field."
        if not self.query_one("#login-secret", Input).value:
            return "The password is missing." if self.needs_username else "The Vault token is missing."
        return None

    def action_submit(self) -> None:
        """Log in with the checked form, in a thread."""
        if self.info is not None or self.busy:
            return
        if not self._ready:
            self._say("Press Enter in the password field first to check the form.")
            return
        username = self.query_one("#login-username", Input).value if self.needs_username else ""
        field = self.query_one("#login-secret", Input)
        secret = Secret(field.value, "Vault token" if self.method == "token" else "Vault password")
        field.value = ""
        self._ready = False
        self.busy = True
        self._say("Logging in...")
        self._login(username, secret)

    @work(exclusive=True, group="vault-login")
    async def _login(self, username: str, secret: Secret) -> None:
        try:
            info = await asyncio.to_thread(self.login_function, self.method, secret=secret, username=username, mount=self.auth_mount)
        except KeytriageError as error:
            self._say(f"Login failed: {login_error_words(self.method, error)}")
            self.query_one("#login-secret", Input).focus()
            return
        finally:
            self.busy = False
        self.info = info
        expiry = f"expires in {info.ttl_words()}" if info.ttl_seconds else "does not expire"
        self._say(f"Logged in as {info.display_name}; the token {expiry} and is kept in memory only.")
        self.query_one("#login-keys", Static).update("[o] OK")
        self.set_focus(None)

    def action_done(self) -> None:
        """Close after a successful login."""
        if self.info is not None:
            self.dismiss(self.info)

    def action_cancel(self) -> None:
        """Close without logging in (or keep a login that already succeeded)."""
        for field in self.query(Input):
            if field.password:
                field.value = ""
        self.dismiss(self.info)


__all__ = ["Choice", "ChoiceModal", "OutcomeModal", "VaultLoginScreen", "login_error_words"]
