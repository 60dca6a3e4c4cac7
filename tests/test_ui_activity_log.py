"""The activity log wraps long entries to the panel without losing a character."""

from __future__ import annotations

from conftest import FakeScanner, make_scan, make_token
from rich.cells import cell_len

from tui.ui.widgets import STAMP_WIDTH, wrap_activity_line

DRAFT_LINE = ("A session at 23:39 UTC (cplc:1AB07E575A17C0DE0001) did not end with a quit: "
              "press t, then d, to see its ticket draft")


async def settle(app, pilot) -> None:
    """Wait for the scan worker, the messages it posted and the log's scroll to the end."""
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


def entry_rows(log, stamp_text: str) -> list[str]:
    """Return the rendered rows of the entry whose first row starts with `stamp_text`."""
    rows = [strip.text.rstrip() for strip in log.lines]
    start = next(index for index, row in enumerate(rows) if row.startswith(stamp_text))
    end = start + 1
    while end < len(rows) and rows[end].startswith(" " * STAMP_WIDTH):
        end += 1
    return rows[start:end]


def visible_rows(log) -> list[str]:
    """Return the rows the panel shows on screen now."""
    return [log.render_line(y).text.rstrip() for y in range(log.scrollable_content_region.height)]


async def test_long_line_wraps_without_loss(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        log = app.activity
        app.activity.add(DRAFT_LINE)
        await settle(app, pilot)

        width = log.scrollable_content_region.width
        rows = entry_rows(log, "20:01:02 A session at")
        assert width < len(DRAFT_LINE)
        assert len(rows) == 2
        assert all(cell_len(row) <= width for row in rows)
        assert rows[1].startswith(" " * STAMP_WIDTH)
        assert " ".join(row.strip() for row in rows) == f"20:01:02 {DRAFT_LINE}"
        assert log.virtual_size.width <= width

        on_screen = " ".join(visible_rows(log))
        for word in DRAFT_LINE.split():
            assert word in on_screen, word
        assert app.activity.entries[-1] == f"20:01:02 {DRAFT_LINE}"


async def test_entries_wrap_again_on_resize(make_app):
    app = make_app(FakeScanner([make_scan(make_token())]))

    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        log = app.activity
        log.add(DRAFT_LINE)
        await settle(app, pilot)
        assert len(entry_rows(log, "20:01:02 A session at")) == 2

        await pilot.resize_terminal(160, 30)
        await settle(app, pilot)
        wide = log.scrollable_content_region.width
        assert wide > len(DRAFT_LINE) + STAMP_WIDTH
        assert entry_rows(log, "20:01:02 A session at") == [f"20:01:02 {DRAFT_LINE}"]
        assert all(cell_len(strip.text.rstrip()) <= wide for strip in log.lines)

        await pilot.resize_terminal(80, 24)
        await settle(app, pilot)
        narrow = log.scrollable_content_region.width
        rows = entry_rows(log, "20:01:02 A session at")
        assert len(rows) == 2
        assert all(cell_len(row) <= narrow for row in rows)
        assert " ".join(row.strip() for row in rows) == f"20:01:02 {DRAFT_LINE}"
        # Every entry is rendered once: the rewrap replaced the rows instead of appending them.
        assert len([row for row in (strip.text for strip in log.lines) if row.startswith("20:01:02 A session at")]) == 1


def test_wrap_breaks_at_spaces_with_indent():
    rows = wrap_activity_line("12:00:00 Verify: sending one VERIFY to cplc:1AB0", 30)

    assert rows == ["12:00:00 Verify: sending one", "         VERIFY to cplc:1AB0"]


def test_wrap_splits_word_longer_than_row():
    data = "00A4040008A000000308000010000100"
    rows = wrap_activity_line(f"12:00:00 APDU {data}", 24)

    assert all(cell_len(row) <= 24 for row in rows)
    assert rows[0] == "12:00:00 APDU 00A4040008"
    assert all(row.startswith(" " * STAMP_WIDTH) for row in rows[1:])
    assert "".join(rows).replace(" ", "") == f"12:00:00APDU{data}"


def test_wrap_keeps_inner_spaces_and_newlines():
    assert wrap_activity_line("12:00:00 SW 63 C2  tries 2", 80) == ["12:00:00 SW 63 C2  tries 2"]
    assert wrap_activity_line("12:00:00 first\nsecond", 80) == ["12:00:00 first", "         second"]


def test_wrap_narrow_width_drops_indent():
    rows = wrap_activity_line("12:00:00 abc def", 8)

    assert rows == ["12:00:00", "abc def"]


def test_wrap_wide_characters_fit_cells():
    rows = wrap_activity_line("12:00:00 読み取り結果 ok", 16)

    assert all(cell_len(row) <= 16 for row in rows)
    assert "".join(rows).replace(" ", "") == "12:00:00読み取り結果ok"
