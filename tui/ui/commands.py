"""The command palette provider: every main-screen action, found by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.ui.actions import all_actions, key_text


class ActionsProvider(Provider):
    """List every action of the action table, with its key and help text."""

    def _entries(self):
        for spec in all_actions():
            yield spec, f"{spec.label} ({key_text(spec)})", partial(self.app.run_action, spec.action)

    async def discover(self) -> Hits:
        """Offer every action when the palette opens with no input."""
        for spec, name, command in self._entries():
            yield DiscoveryHit(name, command, help=spec.help)

    async def search(self, query: str) -> Hits:
        """Offer the actions whose name matches `query`, best match first."""
        matcher = self.matcher(query)
        for spec, name, command in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), command, help=spec.help)
