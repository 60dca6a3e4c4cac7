"""Runbook Step 10: wipe the token and set a new PIN and PUK, escrowed first.

Methods by profile:
- YubiKey: PIV reset `00 FB 00 00`. The key accepts it only when the PIN
  and the PUK are both blocked. It wipes the PIV keys, certificates and
  data objects and restores the default PIN 123456, PUK 12345678 and
  management key. OATH, OTP and FIDO are separate applications and stay.
- HID Crescendo: ACA RESET CARD `00 38 00 00`, which needs the PIN verified
  or XAUTH1. HID documents that it clears the admin key, every PKI key, the
  PIV data containers and the OATH keys and configurations, and sets the PIN
  to 00000000. The grant comes from an admin key (on file, typed, or the
  all-zero factory key) or the PIN (typed, or the factory 00000000), each
  chosen explicitly by the technician and sent once.
- Generic PIV: SP 800-73-4 defines no reset, so the tool has none to send;
  the vendor tool or the CMS must reprovision the card.

After the wipe the new PIN (and on PIV profiles the new PUK) goes through the
escrow flow like every other value: pending first, then the APDU. The
CHANGE REFERENCE DATA / CHANGE PIN after the reset sends the factory value
the reset itself just set, not a guess.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from tui.aca import select_aca
from tui.apdu import CommandApdu, Status
from tui.errors import PcscError
from tui.escrow.actions import initial_pin_request, set_piv_puk
from tui.escrow.flow import ApplyOutcome, EscrowResult, Outcome, TransmitLostError
from tui.escrow.records import Encoding, SecretKind
from tui.model import PinState, Profile, ScanResult, TokenScan
from tui.pin import encode_aca_pin, encode_pin, encode_piv_pin
from tui.piv import PIN_REFERENCE, PIV_AID, select_command
from tui.recovery.common import RecoveryRefusedError, require_token_id, require_writable, session_flow
from tui.recovery.generate import check_new_pin, generate_pin_for, generate_puk
from tui.secret import Secret
from tui.settings import SiteSettings
from tui.transport import Channel
from tui.xauth import authenticate, parse_admin_key

log = logging.getLogger("keytriage.recovery")

OPERATION = "reprovision"

YUBIKEY_DEFAULT_PIN = "123456"
YUBIKEY_DEFAULT_PUK = "12345678"
ACA_DEFAULT_PIN = "00000000"

PIV_RESET_COMMAND = CommandApdu(0x00, 0xFB, 0x00, 0x00, name="PIV RESET")
RESET_CARD_COMMAND = CommandApdu(0x00, 0x38, 0x00, 0x00, name="RESET CARD")

FOLLOW_UP_OATH = "Reprovision the OATH/HOTP slot through the PSKC workflow."
FOLLOW_UP_IDP = "Have the user re-enrol the key in the IdP (new PIV certificate from the CA)."
FOLLOW_UP_FIDO = "Have the user re-register the key as a FIDO2 authenticator with every relying party."
FOLLOW_UP_ADMIN_KEY = "Install a new admin key (escrowed first) through the provisioning workflow, so the PIN can be unlocked next time."


class ResetMethod(str, enum.Enum):
    """The wipe command Step 10 sends, by profile."""

    YUBIKEY_PIV_RESET = "YubiKey PIV reset (00 FB 00 00)"
    CRESCENDO_RESET_CARD = "ACA RESET CARD (00 38 00 00)"
    NONE = "no reset the tool can send"


class ResetAuth(str, enum.Enum):
    """The grant a Crescendo RESET CARD needs: XAUTH1 with an admin key, or the verified PIN."""

    ADMIN_KEY_ON_FILE = "admin key on file"
    ADMIN_KEY_TYPED = "admin key typed by the technician"
    FACTORY_ADMIN_KEY = "factory default admin key (all zero)"
    PIN_TYPED = "PIN typed by the technician"
    FACTORY_PIN = "factory default PIN 00000000"


@dataclass
class ReprovisionPlan:
    """The Step 10 plan for one token: method, precondition, losses and refusals."""

    token_id: str | None
    method: ResetMethod
    ready: bool  # True when the method's precondition is met (refusals aside)
    precondition: str
    losses: list[str] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)
    follow_up: list[str] = field(default_factory=list)
    auth_options: list[ResetAuth] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def confirmation(self) -> str:
        """What the technician types to confirm: the last four characters of the token ID."""
        return (self.token_id or "")[-4:]


@dataclass
class ReprovisionResult:
    """The result of Step 10: whether the wipe ran, the escrow results and the follow-up actions."""

    wiped: bool
    verdict: str
    steps: list[str] = field(default_factory=list)
    escrow: list[object] = field(default_factory=list)  # tui.escrow.flow.EscrowResult
    follow_up: list[str] = field(default_factory=list)
    new_pin: Secret | None = field(default=None, repr=False)
    new_puk: Secret | None = field(default=None, repr=False)
    status: Status | None = None


def _certificate_losses(token: TokenScan) -> list[str]:
    slots = [getattr(c, "slot", "?") for c in token.certificates or [] if getattr(c, "present", None)]
    if slots:
        return [f"PIV certificates and their private keys in slots {', '.join(slots)}"]
    return ["PIV private keys and certificates (none were read by the scan, but any present are lost)"]


def _otp_configured(token: TokenScan) -> bool | None:
    otp = getattr(token, "otp", None)
    if otp is None:
        return None
    return any(getattr(slot, "present", False) and getattr(slot, "configured", None) is not False for slot in otp.slots)


def plan_reprovision(token: TokenScan, scan: ScanResult, settings: SiteSettings) -> ReprovisionPlan:
    """Plan Step 10 for `token`: method, precondition, losses and refusals; sends nothing."""
    token_id = str(token.token_id) if token.token_id is not None else None
    card = token.smartcard
    plan = _plan_for_profile(token, token_id)

    if settings.read_only:
        plan.refusals.append("Read-only (tier-1) mode: reprovisioning is not available. Escalate.")
    if len(scan.tokens) > 1:
        readers = ", ".join(t.reader for t in scan.tokens)
        plan.refusals.append(f"{len(scan.tokens)} tokens are attached ({readers}): remove every key but the user's "
                             "before a destructive step.")
    if token_id is None:
        plan.refusals.append("The token has no ID, so the new PIN cannot be escrowed: capture the ID first.")
    if card.pin.state is PinState.OK and (card.pin.remaining or 0) > 0:
        plan.notes.append(f"The smart-card PIN is not blocked ({card.pin.text()}): prefer Step 4 or 6 before a wipe.")
    return plan


def _plan_for_profile(token: TokenScan, token_id: str | None) -> ReprovisionPlan:
    card = token.smartcard
    if token.profile is Profile.YUBIKEY:
        pin_blocked = card.pin.state is PinState.BLOCKED
        puk_blocked = card.puk.state is PinState.BLOCKED
        ready = pin_blocked and puk_blocked
        if ready:
            precondition = "The PIN and the PUK are both blocked, so the YubiKey accepts the PIV reset."
        elif not pin_blocked:
            precondition = (f"The PIV reset needs the PIN and the PUK both blocked; the PIN is {card.pin.text()}. "
                            "With the PIN and management key known, a blocked PUK is restored by setting the PIN "
                            "and PUK retries (ykman piv access set-retries), which resets both to their defaults: "
                            "then change both at once and escrow them. No wipe is needed.")
        else:
            precondition = (f"The PIV reset needs the PUK blocked too; the PUK is {card.puk.text()}. Reset the PIN "
                            "with the PUK (Step 6) first. keytriage never spends PUK tries to reach the reset.")
        plan = ReprovisionPlan(token_id, ResetMethod.YUBIKEY_PIV_RESET, ready, precondition,
                               losses=_certificate_losses(token) + ["the PIV management key (back to the factory default)",
                                                                    "the CHUID and every other PIV data object"],
                               untouched=["OATH and OTP slots", "FIDO2 credentials and the FIDO PIN"],
                               follow_up=[FOLLOW_UP_IDP])
        return plan

    if token.profile is Profile.HID_CRESCENDO:
        options: list[ResetAuth] = []
        if card.admin_key.present is not False:
            options += [ResetAuth.ADMIN_KEY_ON_FILE, ResetAuth.ADMIN_KEY_TYPED, ResetAuth.FACTORY_ADMIN_KEY]
        pin_usable = card.pin.state is not PinState.BLOCKED and card.pin.remaining != 0
        if pin_usable:
            options += [ResetAuth.PIN_TYPED, ResetAuth.FACTORY_PIN]
        ready = bool(options)
        if ready:
            precondition = ("RESET CARD needs the PIN verified or XAUTH1: choose the admin key on file, a typed key, "
                            "or the factory default explicitly. Each is sent once.")
        else:
            precondition = ("RESET CARD needs the PIN verified or XAUTH1, but the PIN is blocked and no admin key is "
                            "set: this key has no reset the tool can send. Use the vendor tool or the CMS.")
        otp = _otp_configured(token)
        losses = (_certificate_losses(token)
                  + ["the admin (XAUTH1) key", "every PIV data container",
                     "OATH keys and configurations" + (" (configured slots were found)" if otp else "")])
        # NOTE: HID's RESET CARD page does not mention FIDO; the cost of a reprovision is
        # stated as including FIDO re-registration, so FIDO is treated as at risk.
        return ReprovisionPlan(token_id, ResetMethod.CRESCENDO_RESET_CARD, ready, precondition,
                               losses=losses + ["FIDO2 credentials may be lost (not stated by HID for RESET CARD)"],
                               untouched=[],
                               follow_up=[FOLLOW_UP_OATH, FOLLOW_UP_IDP, FOLLOW_UP_FIDO, FOLLOW_UP_ADMIN_KEY],
                               auth_options=options,
                               notes=["HID publishes no PUK command for the Crescendo, so no PUK is set after the reset."])

    return ReprovisionPlan(token_id, ResetMethod.NONE, False,
                           f"This {token.profile.label} has no reset the tool can send (SP 800-73-4 defines none). "
                           "Reprovision it with the vendor tool or the CMS.")


def reprovision(channel: Channel, token: TokenScan, scan: ScanResult, session, *, confirmation: str,
                user_accepted: bool, auth: ResetAuth | None = None, secret: Secret | None = None,
                new_pin: Secret | None = None, new_puk: Secret | None = None) -> ReprovisionResult:
    """Wipe the token, then set a new PIN and PUK through escrow, and record the follow-up actions.

    `secret` is the typed admin key or PIN for `auth`; none for the on-file
    or factory options. Raises before anything is sent: `ReadOnlyModeError`,
    `RecoveryRefusedError` (a plan refusal, precondition not met, wrong
    confirmation, user acceptance not recorded, missing or unusable grant),
    `PolicyError` for a new PIN or key the token or site rejects.
    """
    require_writable(session.settings, "Reprovisioning")
    plan = plan_reprovision(token, scan, session.settings)
    if plan.refusals:
        raise RecoveryRefusedError("Reprovision not started: " + " ".join(plan.refusals))
    token_id = require_token_id(token, "Reprovisioning")
    if not user_accepted:
        raise RecoveryRefusedError("Reprovision not started: record that the user accepts losing the certificates, "
                                   "OTP slots and re-enrolment work first.")
    if confirmation.strip().upper() != plan.confirmation.upper():
        raise RecoveryRefusedError(f"Reprovision not started: the confirmation does not match the last four characters "
                                   f"of token ID {token_id}.")
    if not plan.ready:
        raise RecoveryRefusedError(f"Reprovision not started: {plan.precondition}")

    new_pin = new_pin or generate_pin_for(token, session.settings)
    check_new_pin(new_pin, token, session.settings)
    flow = session_flow(session)
    grant = _grant(token, session, plan, auth, secret) if plan.method is ResetMethod.CRESCENDO_RESET_CARD else None

    with session.locks.hold(token_id, "reprovision"):
        session.audit.record(OPERATION, "sending", token_id=token_id, profile=token.profile.value,
                             method=plan.method.value, source=auth.value if auth else None, ticket=session.triage.ticket or None)
        if plan.method is ResetMethod.YUBIKEY_PIV_RESET:
            result = _reprovision_yubikey(channel, token, session, flow, new_pin, new_puk)
        else:
            result = _reprovision_crescendo(channel, token, session, flow, grant, new_pin)

    session.audit.record(OPERATION, "wiped" if result.wiped else "not wiped", token_id=token_id, profile=token.profile.value,
                         status=result.status.sw if result.status else None, method=plan.method.value, step="10")
    if result.wiped:
        result.follow_up = list(plan.follow_up)
        refs = [reference for reference in (e.reference() for e in result.escrow) if reference]
        session.add_event("reprovision", f"Step 10 reprovision ({plan.method.value}): token wiped", token_id=token_id,
                          applet="smart card", resolved_by="full reprovision", escrow_refs=refs,
                          user_actions=list(plan.follow_up))
        for action in plan.follow_up:
            session.add_event("follow-up", action, token_id=token_id, applet="smart card")
    else:
        session.add_event("reprovision", f"Step 10 reprovision not done: {result.verdict}", token_id=token_id,
                          applet="smart card")
    return result


@dataclass
class _Grant:
    kind: str  # "admin-key" or "pin"
    value: Secret = field(repr=False)
    key_type: str | None = None


def _grant(token: TokenScan, session, plan: ReprovisionPlan, auth: ResetAuth | None, secret: Secret | None) -> _Grant:
    if auth is None or auth not in plan.auth_options:
        options = ", ".join(option.value for option in plan.auth_options)
        raise RecoveryRefusedError(f"Reprovision not started: choose how RESET CARD is granted ({options}).")
    key_type = token.smartcard.admin_key.key_type
    if auth is ResetAuth.ADMIN_KEY_ON_FILE:
        from tui.recovery.unlock import admin_key_from_escrow

        key = admin_key_from_escrow(token, session)
        return _Grant("admin-key", parse_admin_key(key, key_type), key_type)
    if auth is ResetAuth.ADMIN_KEY_TYPED:
        if secret is None:
            raise RecoveryRefusedError("Reprovision not started: type the admin key.")
        return _Grant("admin-key", parse_admin_key(secret, key_type), key_type)
    if auth is ResetAuth.FACTORY_ADMIN_KEY:
        length = 24 if key_type == "3DES" else 16
        return _Grant("admin-key", Secret(bytes(length), "admin key"), key_type)
    if auth is ResetAuth.PIN_TYPED:
        if secret is None:
            raise RecoveryRefusedError("Reprovision not started: type the PIN.")
        encode_pin(secret, token.smartcard.pin_policy)
        return _Grant("pin", secret)
    return _Grant("pin", Secret(ACA_DEFAULT_PIN, "PIN"))


def _send_wipe(channel: Channel, select, wipe: CommandApdu, before=None) -> tuple[Status | None, str]:
    """Select the applet, run `before` (the grant), then send the wipe command; return its status and a reason."""
    with channel.transaction():
        status = select()
        if not status.ok:
            return None, f"SELECT returned {status}; nothing was wiped"
        if before is not None:
            problem = before()
            if problem:
                return None, problem
        try:
            _, status = channel.send(wipe)
        except PcscError as error:
            return None, f"{wipe.name} was sent but its response was lost ({error}); rescan before anything else"
    return status, ""


def _reprovision_yubikey(channel: Channel, token: TokenScan, session, flow, new_pin: Secret,
                         new_puk: Secret | None) -> ReprovisionResult:
    status, problem = _send_wipe(channel, lambda: channel.send(select_command(PIV_AID, "SELECT PIV"))[1], PIV_RESET_COMMAND)
    if status is None or not status.ok:
        verdict = problem or f"PIV RESET returned {status}: the precondition (PIN and PUK blocked) did not hold. Nothing was wiped."
        return ReprovisionResult(False, verdict, status=status)

    result = ReprovisionResult(True, "", ["PIV reset: PIN 123456, PUK 12345678 and the default management key are set."],
                               status=status)
    pin_result = _set_pin(channel, token, session, flow, new_pin, YUBIKEY_DEFAULT_PIN, aca=False)
    result.escrow.append(pin_result)
    result.steps.append(f"New PIN: {pin_result.words()}")

    puk = new_puk or generate_puk("padded")
    puk_result = set_piv_puk(channel, flow, str(token.token_id), Secret(YUBIKEY_DEFAULT_PUK, "PIV PUK"), profile=token.profile.value,
                             ticket=session.triage.ticket, reason="PUK set after a PIV reset", new_puk=puk,
                             allow_on_file=True)
    result.escrow.append(puk_result)
    result.steps.append(f"New PUK: {puk_result.words()}")
    result.new_pin = new_pin if pin_result.outcome is Outcome.APPLIED else None
    result.new_puk = puk if puk_result.outcome is Outcome.APPLIED else None
    result.verdict = _verdict(result)
    return result


def _reprovision_crescendo(channel: Channel, token: TokenScan, session, flow, grant: _Grant,
                           new_pin: Secret) -> ReprovisionResult:
    def select() -> Status:
        return select_aca(channel)[0]

    def authorise() -> str:
        if grant.kind == "admin-key":
            xauth = authenticate(channel, grant.value, key_type=grant.key_type, select=False)
            return "" if xauth.succeeded else f"EXTERNAL AUTHENTICATE failed: {xauth.verdict} Nothing was wiped; do not retry with the same key."
        block = encode_aca_pin(grant.value, token.smartcard.pin_policy) if token.smartcard.pin_policy else encode_piv_pin(grant.value)
        _, status = channel.send(CommandApdu(0x00, 0x20, 0x00, 0x00, block.reveal_bytes(), name="VERIFY PIN (ACA)"))
        return "" if status.ok else f"VERIFY PIN returned {status}. Nothing was wiped; do not guess again."

    status, problem = _send_wipe(channel, select, RESET_CARD_COMMAND, authorise)
    if status is None or not status.ok:
        return ReprovisionResult(False, problem or f"RESET CARD returned {status}. Nothing was wiped.", status=status)

    result = ReprovisionResult(True, "", ["RESET CARD: the token is back in its manufacturing state, PIN 00000000."],
                               status=status)
    pin_result = _set_pin(channel, token, session, flow, new_pin, ACA_DEFAULT_PIN, aca=True)
    result.escrow.append(pin_result)
    result.steps.append(f"New PIN: {pin_result.words()}")
    result.steps.append("No PUK set: HID publishes no PUK command for the Crescendo.")
    result.new_pin = new_pin if pin_result.outcome is Outcome.APPLIED else None
    result.verdict = _verdict(result)
    return result


def _set_pin(channel: Channel, token: TokenScan, session, flow, new_pin: Secret, factory_pin: str, *, aca: bool) -> EscrowResult:
    """Escrow the new PIN, then change the factory PIN the reset set to it."""
    old = Secret(factory_pin, "PIN")
    if aca:
        policy = token.smartcard.pin_policy
        data = (encode_pin(old, policy).reveal_bytes() + encode_pin(new_pin, policy, label="new PIN").reveal_bytes())
        command = CommandApdu(0x00, 0x24, 0x01, 0x00, data, name="CHANGE PIN (ACA)", sensitive=True)
        aid, name = None, "SELECT ACA"
    else:
        data = encode_piv_pin(old).reveal_bytes() + encode_piv_pin(new_pin, label="new PIN").reveal_bytes()
        command = CommandApdu(0x00, 0x24, 0x00, PIN_REFERENCE, data, name="CHANGE REFERENCE DATA (PIN)", sensitive=True)
        aid, name = PIV_AID, "SELECT PIV"

    def apply() -> ApplyOutcome:
        with channel.transaction():
            try:
                select_status = select_aca(channel)[0] if aca else channel.send(select_command(aid, name))[1]
            except PcscError as error:
                return ApplyOutcome.failed(None, f"{name} failed before the PIN was sent: {error}")
            if not select_status.ok:
                return ApplyOutcome.failed(select_status, f"{name} failed, so the PIN was not sent")
            try:
                _, status = channel.send(command)
            except PcscError as error:
                raise TransmitLostError(f"{command.name} was sent but its response was lost: {error}") from error
        return ApplyOutcome.applied(status) if status.ok else ApplyOutcome.failed(status)

    request = initial_pin_request(str(token.token_id), SecretKind.PIV_PIN, new_pin, encoding=Encoding.ASCII_FF_PADDED.value,
                                  ticket=session.triage.ticket, profile=token.profile.value)
    return flow.set_secret(request, apply)


def _verdict(result: ReprovisionResult) -> str:
    failed = [e for e in result.escrow if e.outcome is not Outcome.APPLIED]
    if failed:
        return ("The token was wiped, but not every new value is in place: " + "; ".join(e.words() for e in failed)
                + ". The token still has its factory values there; set them before the user leaves.")
    return "The token is reprovisioned and the new values are escrowed. Follow-up actions are recorded for the ticket."
