"""The panels of the main screen and the plain functions that word their content.

The render functions return words and numbers that carry every state, so
tests can read them. The stylesheet only repeats the state in colour. The
panel texts are `rich.text.Text` or go into a Static built with
`markup=False`, because a key hint such as "[u]" or a reader name with
brackets would otherwise be read as Rich markup and vanish.

The marked toggles (`MarkedRadioButton`, `MarkedCheckbox`) are shared by the
modals: they draw their state as characters for the same reason. So is
`FieldInput`, a text field that Enter leaves at once, so a letter key typed
right after Enter reaches the screen instead of the field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from rich.cells import cell_len, chop_cells
from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.geometry import Size
from textual.widgets import Checkbox, Input, OptionList, RadioButton, RichLog, Static
from textual.widgets.option_list import Option

from tui.model import ScanResult, Source, TokenScan
from tui.runbook import STEPS, OfferedStep, RunbookResult
from tui.ui.actions import all_actions

# Marks in front of runbook lines. Each line also states its outcome in words.
# A tick means the step found nothing wrong. A step that found a problem
# (a blocked PIN, no PUK command) gets "!", because a tick reads as "fine".
MARK_DONE = "✔"
MARK_STOP = "✖"
MARK_NEXT = "▶"
MARK_PROBLEM = "!"

COUNTER_LABEL_WIDTH = 14


def lab_banner_text(scenario: str) -> str:
    """Word the LAB banner, e.g. " LAB pin-locked-puk ": the word LAB carries the mode, not the colour."""
    return f" LAB {scenario} "


# The header's banner while the last scan found a lab key served through pcscd.
LAB_KEY_BANNER = " LAB KEY "


def token_key(token: TokenScan) -> str:
    """Return the key that identifies `token` across rescans: its ID, else its reader."""
    return str(token.token_id) if token.token_id is not None else f"reader:{token.reader}"


def render_token_option(position: int, token: TokenScan, selected: bool = False) -> str:
    """Word one entry of the token list: a ">" when selected, index, profile and ID."""
    if token.problem is not None:
        second = f"not readable: {token.problem.check}"
    elif token.token_id is not None:
        second = str(token.token_id)
    else:
        second = "no ID"
    marker = ">" if selected else " "
    return f"{marker} {position} {token.profile.label}\n    {second}"


def render_token_detail(token: TokenScan | None) -> Text:
    """Word the reader and ATR of the selected token."""
    if token is None:
        return Text("")
    atr = token.atr or "not read"
    # An emulated key served through pcscd looks like hardware; its reserved ID
    # gives it away, and the word LAB says so without relying on colour.
    served_lab_key = any(note.startswith("LAB KEY") for note in token.smartcard.notes)
    prefix = "LAB KEY  " if served_lab_key else ""
    return Text(f"Reader: {token.reader}\n{prefix}ATR: {atr}")


def _counter_line(label: str, value: str) -> str:
    return f"{label:<{COUNTER_LABEL_WIDTH}} {value}"


def render_counters(token: TokenScan | None) -> Text:
    """Word the counters of `token`, most important first.

    Smart-card PIN (tries and source), PUK, admin key, FIDO PIN, each
    present OTP slot, each present PIV certificate, then the PIN policy.
    The panel scrolls, so the later lines may sit below its fold at 80x24.
    """
    if token is None:
        return Text("No token selected.")
    if token.problem is not None:
        return Text(f"Not readable: {token.problem.check} check failed.\n{token.problem.message}")

    card = token.smartcard
    lines = [
        _counter_line("Smart-card PIN", card.pin.text()),
        f"  source: {card.pin.source.value}",
        _counter_line("PUK", card.puk.text()),
    ]
    if card.puk.source is not Source.NONE:
        lines.append(f"  source: {card.puk.source.value}")
    lines.append(_counter_line("Admin key", card.admin_key.text()))
    lines.extend(fido_counter_lines(token.fido))
    lines.extend(otp_counter_lines(token.otp))
    lines.extend(certificate_counter_lines(token.certificates, card.piv_present))

    policy = card.pin_policy
    if policy is None:
        policy_text = "not readable"
    else:
        chars = "digits" if policy.numeric_only else "characters"
        policy_text = f"{policy.min_length}-{policy.max_length} {chars}"
    lines.append(_counter_line("PIN policy", policy_text))
    return Text("\n".join(lines))


# CTAP 2.0 and 2.1 set the FIDO PIN retry counter to 8 when a PIN is set, and 8 is its maximum.
FIDO_PIN_MAX_RETRIES = 8


def fido_counter_lines(state) -> list[str]:
    """Word the FIDO PIN state in one line, e.g. "FIDO PIN  5/8 ok"; nothing when FIDO was not read."""
    from tui.fido.state import FidoPinState, PinReason

    if state is None:
        return []
    pin = state.pin
    tries = f"{pin.retries}/{FIDO_PIN_MAX_RETRIES}" if pin.retries is not None else None
    if pin.state is FidoPinState.HEALTHY:
        return [_counter_line("FIDO PIN", f"{tries} ok")]
    if pin.state is FidoPinState.NOT_SET:
        return [_counter_line("FIDO PIN", "not set")]
    if pin.state is FidoPinState.PERMANENTLY_BLOCKED:
        return [_counter_line("FIDO PIN", "BLOCKED (reset only)")]
    if pin.state is FidoPinState.TEMPORARILY_BLOCKED:
        suffix = f", {tries}" if tries else ""
        return [_counter_line("FIDO PIN", f"re-insert needed{suffix}")]
    if pin.state is FidoPinState.NOT_ACCESSIBLE:
        problem = state.not_accessible
        reason = "elevation needed" if problem is not None and "Windows" in problem.message else "permission denied"
        return [_counter_line("FIDO", f"not accessible: {reason}")]
    if pin.state is FidoPinState.NOT_SUPPORTED:
        if pin.reason is PinReason.NO_AUTHENTICATOR:
            return [_counter_line("FIDO", "none found")]
        return [_counter_line("FIDO PIN", "not supported")]
    return [_counter_line("FIDO PIN", "unknown (read failed)")]


def otp_counter_lines(otp) -> list[str]:
    """Word each present OTP slot, e.g. "OTP slot 1  HOTP"; "OTP  none" when the token has no OTP slot."""
    if otp is None:
        return []
    present = otp.present()
    if not present:
        failed = any("could not be read" in note for note in otp.notes)
        return [_counter_line("OTP", "unknown (read failed)" if failed else "none")]
    lines = []
    for slot in present:
        if slot.configured is False:
            value = "empty"
        elif slot.mode is not None:
            value = slot.mode
        elif slot.configured:
            value = "configured, type unknown"
        else:
            value = "unknown"
        lines.append(_counter_line(slot.label, value))
    return lines


def certificate_counter_lines(certificates, piv_present: bool) -> list[str]:
    """Word each present PIV certificate, e.g. "Cert 9A  expired 2024-01-31" or "Cert 9A  valid".

    Only an expired certificate shows its date here, because that date is
    what the technician acts on; `keytriage scan` shows every date.
    """
    shown = [certificate for certificate in certificates if certificate.present is not False]
    if not shown:
        return [_counter_line("Certificates", "none")] if piv_present and certificates else []
    lines = []
    for certificate in shown:
        text = certificate.text()
        if certificate.expired is False:
            text = "valid"
        lines.append(_counter_line(f"Cert {certificate.slot}", text))
    return lines


def render_runbook_steps(result: RunbookResult | None, has_action: Callable[[str], bool]) -> Text:
    """Word the runbook panel, most important first.

    The path taken, the recommended next step with its key and cost, the
    verdict, the locked applet (or why it is no lockout), then the steps
    offered beside the path. The panel scrolls, so the offered steps may
    sit below its fold at 80x24. `has_action` returns whether the app can
    already run an action, so a key is only shown for an action that exists.
    """
    if result is None:
        return Text("No scan result. Press r to scan.")

    text = Text()
    for line in runbook_path_lines(result, has_action):
        text.append(line + "\n")
    text.append(f"{MARK_NEXT} {next_step_line(result, has_action)}\n", style="bold")
    if result.next_step is not None:
        text.append(f"    {STEPS[result.next_step].kind.value} step\n")

    text.append("\nVerdict: ", style="bold")
    text.append(result.verdict or "none yet.")
    text.append("\n")

    state = runbook_state_line(result)
    if state:
        text.append(f"\n{state}\n")
    if result.offered:
        text.append("\nAlso possible:\n")
        for offer in result.offered:
            text.append(f"  {offered_step_line(offer, has_action)}\n")
            text.append(f"    {offer.reason}\n")
    text.rstrip()
    return text


def runbook_path_lines(result: RunbookResult, has_action: Callable[[str], bool]) -> list[str]:
    """Word each step on the path with its mark, Step 0 once.

    Step 0 is the engine's line once the triage is answered, else a hint
    with the triage key. A stop that settles nothing gets the stop mark, a
    step that found a problem the problem mark, any other step the tick.
    """
    lines = []
    if not result.path or result.path[0].step != "0":
        step_zero = STEPS["0"]
        lines.append(f"  0 {step_zero.title}{_key_hint(step_zero.action, has_action)}")

    for index, taken in enumerate(result.path):
        last = index == len(result.path) - 1
        if last and result.stopped and result.resolved_by is None:
            mark = MARK_STOP
        elif taken.problem:
            mark = MARK_PROBLEM
        else:
            mark = MARK_DONE
        lines.append(f"{mark} {taken.step} {taken.summary}")
    return lines


def next_step_line(result: RunbookResult, has_action: Callable[[str], bool]) -> str:
    """Word the recommended next step with its key, e.g. "6 Reset the PIN with the PUK [u]"."""
    if result.next_step is not None:
        step = STEPS[result.next_step]
        return f"{step.id} {step.title}{_key_hint(step.action, has_action)}"
    if result.next_action == "rescan":
        # The app's has_action leaves out rescan, the action of Steps 1 to 3, but its key is always bound.
        return f"Fix the reader or USB, then rescan [{_key_for('rescan')}]"
    return f"Close the ticket{_key_hint('ticket', has_action)}"


def runbook_state_line(result: RunbookResult) -> str:
    """Word the locked applet and what resolved it, or why it is no lockout; "" while neither is known."""
    if result.not_lockout:
        return f"Not a lockout: {result.not_lockout}."
    if result.applet and result.resolved_by:
        return f"Locked: {result.applet}, resolved by {result.resolved_by}."
    if result.applet:
        return f"Locked: {result.applet}."
    return ""


def offered_step_line(offer: OfferedStep, has_action: Callable[[str], bool]) -> str:
    """Word an offered step with its key, e.g. "10 Reprovision the token [w]"."""
    step = STEPS.get(offer.step)
    if step is not None and (not offer.action or offer.action == step.action):
        title = step.title
    else:
        title = _label_for(offer.action) or (step.title if step is not None else offer.action)
    return f"{offer.step} {title}{_key_hint(offer.action, has_action)}"


def _key_hint(action: str | None, has_action: Callable[[str], bool]) -> str:
    return f" [{_key_for(action)}]" if action and has_action(action) else ""


def _key_for(action: str) -> str:
    for spec in all_actions():
        if spec.action == action:
            return spec.key_display or spec.keys.split(",")[0]
    return action


def _label_for(action: str) -> str:
    return next((spec.label for spec in all_actions() if spec.action == action), "")


class HeaderBar(Horizontal):
    """One line: the product name, the permanent LAB banner, the Vault state and the scan state in words.

    At 80 columns the LAB banner and the scan state keep their full width;
    the Vault state takes the rest and is cut with an ellipsis when long.
    """

    def __init__(self, lab_scenario: str | None) -> None:
        super().__init__(id="header")
        self.lab_scenario = lab_scenario

    def compose(self) -> ComposeResult:
        yield Static(" keytriage", id="title", markup=False)
        if self.lab_scenario is not None:
            yield Static(lab_banner_text(self.lab_scenario), id="lab-banner", markup=False)
        yield Static("", id="vault-state", markup=False)
        yield Static("", id="scan-state", markup=False)

    def set_state(self, text: str) -> None:
        """Show the scan state, e.g. "Scanning..." or "Scanned 20:01:02"."""
        self.query_one("#scan-state", Static).update(text)

    def set_vault(self, text: str) -> None:
        """Show the Vault state in words, e.g. "Vault: ok (writer, 52m)" or "Vault: sealed"."""
        self.query_one("#vault-state", Static).update(text)

    def show_lab_key(self, present: bool) -> None:
        """Show the LAB KEY banner while the last scan found a lab key, and remove it once a scan finds none.

        A lab key served through pcscd (`keytriage lab serve`) looks like
        hardware to this session. The in-process lab run already shows its
        permanent "LAB <scenario>" banner, so it gets no second one.
        """
        if self.lab_scenario is not None:
            return
        banners = self.query("#lab-banner")
        if present and not banners:
            self.mount(Static(LAB_KEY_BANNER, id="lab-banner", markup=False), after="#title")
        elif not present:
            banners.remove()


class TokenList(OptionList):
    """The tokens found by the last scan; highlighting one selects it.

    The selected entry carries a ">" in its text, so the selection does not
    rest on the highlight colour alone.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tokens: list[TokenScan] = []

    def show_tokens(self, scan: ScanResult | None, selected_key: str | None) -> None:
        """Replace the list with the tokens of `scan` and highlight `selected_key`."""
        self.clear_options()
        self.tokens = list(scan.tokens) if scan is not None else []
        if scan is None:
            return
        if not self.tokens:
            self.add_option(Option("(no token)", id="none", disabled=True))
            return

        keys = [token_key(token) for token in self.tokens]
        selected = keys.index(selected_key) if selected_key in keys else 0
        self.add_options(Option(render_token_option(position, token, position == selected), id=key)
                         for position, (token, key) in enumerate(zip(self.tokens, keys)))
        self.highlighted = selected

    def watch_highlighted(self, highlighted: int | None) -> None:
        super().watch_highlighted(highlighted)
        for position, token in enumerate(self.tokens):
            if position < self.option_count:
                self.replace_option_prompt_at_index(position, render_token_option(position, token, position == highlighted))


class TokensPanel(Vertical):
    """The Tokens panel: the token list, then the reader and ATR of the selected token."""

    def compose(self) -> ComposeResult:
        yield TokenList(id="token-list")
        yield Static("", id="token-detail", markup=False)


# Width of the "HH:MM:SS " stamp, and the indent of an entry's continuation rows.
STAMP_WIDTH = 9


def wrap_activity_line(line: str, width: int) -> list[str]:
    """Wrap one activity entry at spaces into rows of at most `width` terminal cells.

    Rows after the first are indented by `STAMP_WIDTH`, so an entry reads as
    one block under its time stamp. Only the spaces at the breaks are
    dropped: a word longer than a row is split across rows, never cut.
    """
    width = max(width, 1)
    indent = " " * STAMP_WIDTH if width >= 2 * STAMP_WIDTH else ""
    rows: list[str] = []
    for number, paragraph in enumerate(line.split("\n")):
        rows.extend(_wrap_paragraph(paragraph, width, "" if number == 0 else indent, indent))
    return rows


def _wrap_paragraph(text: str, width: int, first_prefix: str, indent: str) -> list[str]:
    rows: list[str] = []
    row, row_empty = first_prefix, True
    for word in text.split(" "):
        joined = row + word if row_empty else f"{row} {word}"
        if cell_len(joined) <= width:
            row, row_empty = joined, False
            continue
        if not word:
            continue  # a space at a break is dropped

        # A word longer than any row (a long hex string) is split, starting on
        # this row. A shorter word that does not fit moves to a new row.
        too_long_for_any_row = cell_len(word) > width - cell_len(indent)
        if not row_empty and too_long_for_any_row and cell_len(row) + 1 < width:
            row += " "
        elif not row_empty:
            rows.append(row)
            row = indent
        while True:
            piece = chop_cells(word, width - cell_len(row))[0]
            word = word[len(piece):]
            if not word:
                row, row_empty = row + piece, False
                break
            rows.append(row + piece)
            row = indent
    rows.append(row)
    return rows


class _WrappedEntry:
    """One activity entry as a Rich renderable that wraps itself to the width it is rendered at."""

    def __init__(self, line: str) -> None:
        self.line = line

    def __rich_console__(self, console: Console, options: ConsoleOptions):
        for row in wrap_activity_line(self.line, options.max_width):
            yield Segment(row)
            yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        longest = max(cell_len(paragraph) for paragraph in self.line.split("\n"))
        return Measurement(1, max(longest, 1))


class ActivityLog(RichLog):
    """The activity log: time, operation, status word and its words; never a secret.

    Each entry wraps at spaces to the panel's width, with its continuation
    rows indented under the text, so no character is lost at 80 columns. When
    the width changes, the entries are wrapped again from `entries`, which
    keeps every line in full.
    """

    def __init__(self, clock: Callable[[], datetime], **kwargs) -> None:
        # RichLog renders a write at least `min_width` cells wide (78 by default)
        # and crops what the panel cannot show. With 1, each entry wraps to the panel.
        super().__init__(wrap=False, markup=False, highlight=False, min_width=1, **kwargs)
        self.clock = clock
        self.entries: list[str] = []
        self._wrapped_width = 0

    def add(self, text: str, when: datetime | None = None) -> None:
        """Append one line, stamped with `when` or the app clock."""
        stamp = (when or self.clock()).strftime("%H:%M:%S")
        line = f"{stamp} {text}".expandtabs()
        self.entries.append(line)
        self._write_entry(line)

    def _write_entry(self, line: str) -> None:
        # The panel's width is passed on, because RichLog otherwise measures
        # against the app console, whose width stayed at the start size after
        # a resize in Pilot runs (Textual 8.2). Before the first layout the
        # width is 0 and RichLog defers the write.
        width = self.scrollable_content_region.width
        self.write(_WrappedEntry(line), width=width if width > 0 else None)

    def on_resize(self) -> None:
        # RichLog's own handler renders the writes made before the first
        # size. After that, a new width needs every entry wrapped again.
        width = self.scrollable_content_region.width
        if width <= 0:
            return
        if self._wrapped_width and width != self._wrapped_width:
            self.clear()
            for line in self.entries:
                self._write_entry(line)
        self._wrapped_width = width

    def add_many(self, lines: Iterable[str]) -> None:
        """Append several lines with the same time stamp."""
        when = self.clock()
        for line in lines:
            self.add(line, when)


# --- toggles that show their state in characters ----------------------------------


class MarkedToggle:
    """Mixin of a Textual toggle button that draws its state as `MARK_ON` or `MARK_OFF`.

    Textual's `RadioButton` and `Checkbox` (8.2) draw the same glyph in both
    states and tell them apart by colour only, which NO_COLOR and 16-colour
    terminals lose. The mark carries the state; colour and bold only repeat it.
    """

    MARK_ON = ""
    MARK_OFF = ""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_class("marked-toggle")

    def render(self) -> Content:
        """Render the mark, then the label, in the button's and the label's component styles."""
        mark = self.MARK_ON if self.value else self.MARK_OFF
        button = Content.styled(mark, self.get_visual_style("toggle--button"))
        label = self.label.pad(1, 1).stylize_before(self.get_visual_style("toggle--label"))
        return Content.assemble(button, label)

    def get_content_width(self, container: Size, viewport: Size) -> int:
        """Return the width of the mark, the label and the space either side of it."""
        label_width = self.label.get_optimal_width(self.styles, 0)
        return len(self.MARK_OFF) + (2 + label_width if label_width else 0)


class MarkedRadioButton(MarkedToggle, RadioButton):
    """A radio button that shows "(*)" when chosen and "( )" when not."""

    # The class lifts these selectors above the specificity of RadioSet's own rules.
    DEFAULT_CSS = """
    MarkedRadioButton.marked-toggle > .toggle--button,
    RadioSet > MarkedRadioButton.marked-toggle > .toggle--button {
        color: $foreground-muted;
        background: transparent;
    }
    MarkedRadioButton.marked-toggle.-on > .toggle--button,
    RadioSet > MarkedRadioButton.marked-toggle.-on > .toggle--button {
        color: $text-success;
        background: $panel;
        text-style: bold;
    }
    """

    MARK_ON = "(*)"
    MARK_OFF = "( )"


class MarkedCheckbox(MarkedToggle, Checkbox):
    """A checkbox that shows "[x]" when ticked and "[ ]" when not."""

    DEFAULT_CSS = """
    MarkedCheckbox.marked-toggle > .toggle--button {
        color: $foreground-muted;
        background: transparent;
    }
    MarkedCheckbox.marked-toggle.-on > .toggle--button {
        color: $text-success;
        background: $panel;
        text-style: bold;
    }
    """

    MARK_ON = "[x]"
    MARK_OFF = "[ ]"


# --- text fields that Enter leaves ----------------------------------------------


class FieldInput(Input):
    """A text field that Enter leaves on arrival, passing on the keys typed after it.

    Textual queues each key on the widget focused when the key arrived, and
    Input's Enter binding runs only after the key has gone round the app. So
    after "INC-4711", Enter, s typed quickly, a plain Input took the s as
    text. Here Enter moves the focus on before anything else (to
    `enter_focus`, a selector on the same screen, or to nothing), then posts
    `Input.Submitted`. A key that reaches the field after it lost the focus is
    posted to the app again, with its character, so the screen's binding or
    the newly focused field gets it.
    """

    def __init__(self, *args, enter_focus: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.enter_focus = enter_focus

    async def _on_key(self, event: events.Key) -> None:
        # Textual calls Input's own key handler after this one unless the default is prevented.
        if self.screen.focused is not self:
            event.stop()
            event.prevent_default()
            self.app.post_message(events.Key(event.key, event.character))
        elif event.key == "enter":
            event.stop()
            event.prevent_default()
            target = self.screen.query_one(self.enter_focus) if self.enter_focus else None
            self.screen.set_focus(target)
            await self.action_submit()
