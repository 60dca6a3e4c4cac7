"""The site PUK manifest: a CSV file of PUKs keyed by token ID, from the original provisioning.

Format (UTF-8, one header line, then one row per token; lines starting
with # are comments):

    token_id,puk,encoding
    cplc:4790516856781A2B3C4D,73910264,padded
    serial:10000001,00112233445566AA,hex-8-bytes

`encoding` is "padded" (6 to 8 characters, FF-padded to 8 bytes, the PIV
and YubiKey form) or "hex-8-bytes" (16 hex digits sent as 8 bytes, the form
of the vendor CLI's 16-digit PUK). Parsing is strict: an unknown header, a
row with the wrong number of fields, a token ID that is not `source:value`,
a PUK that does not fit its encoding, or a token listed twice rejects the
whole file, with the line number and never the PUK in the message. A file
that other users can read is rejected too, because it contains PUKs.
"""

from __future__ import annotations

import csv
import io
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tui.errors import PolicyError
from tui.model import TokenId
from tui.pin import PUK_ENCODINGS, encode_puk
from tui.secret import Secret
from tui.settings import SiteSettings

HEADER = ("token_id", "puk", "encoding")


class ManifestError(PolicyError):
    """The PUK manifest cannot be used; the message names the file and line, never a PUK."""


@dataclass
class ManifestEntry:
    """One manifest row: token ID, PUK, its encoding and the line it came from."""

    token_id: str
    puk: Secret = field(repr=False)
    encoding: str
    line: int


def load_manifest(path: Path) -> dict[str, ManifestEntry]:
    """Parse the manifest strictly and return its rows by token ID; raise `ManifestError`."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"the PUK manifest {path} was not found; fix [site] puk_manifest or restore the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"the PUK manifest {path} cannot be read: {exc}") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ManifestError(f"the PUK manifest {path} is readable or writable by every user; run chmod o-rwx on it first")

    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise ManifestError(f"the PUK manifest {path} is empty; expected the header {','.join(HEADER)}")

    header_number, header_line = lines[0]
    header = tuple(cell.strip() for cell in next(csv.reader([header_line])))
    if header != HEADER:
        raise ManifestError(f"{path} line {header_number}: the header is {','.join(header)}; expected {','.join(HEADER)}")

    entries: dict[str, ManifestEntry] = {}
    for number, line in lines[1:]:
        entry = _parse_row(path, number, line)
        if entry.token_id in entries:
            first = entries[entry.token_id].line
            raise ManifestError(f"{path} line {number}: token {entry.token_id} is listed again (first on line {first}); "
                                "keep one row per token")
        entries[entry.token_id] = entry
    return entries


def _parse_row(path: Path, number: int, line: str) -> ManifestEntry:
    cells = next(csv.reader(io.StringIO(line)))
    if len(cells) != len(HEADER):
        raise ManifestError(f"{path} line {number}: {len(cells)} fields; expected {len(HEADER)} ({','.join(HEADER)})")
    token_text, puk_text, encoding = (cell.strip() for cell in cells)

    try:
        token_id = str(TokenId.parse(token_text))
    except ValueError as exc:
        raise ManifestError(f"{path} line {number}: {exc}") from None
    if encoding not in PUK_ENCODINGS:
        raise ManifestError(f"{path} line {number}: encoding {encoding!r} is not one of {', '.join(PUK_ENCODINGS)}")

    puk = Secret(puk_text, "PIV PUK")
    try:
        encode_puk(puk, encoding)
    except PolicyError as exc:
        raise ManifestError(f"{path} line {number}: {exc}") from None
    return ManifestEntry(token_id, puk, encoding, number)


def lookup_puk(settings: SiteSettings, token_id: object) -> ManifestEntry | None:
    """Return the manifest row of `token_id`, None when no manifest is set or it has no row."""
    if not settings.puk_manifest:
        return None
    path = Path(settings.puk_manifest).expanduser()
    return load_manifest(path).get(str(token_id))
