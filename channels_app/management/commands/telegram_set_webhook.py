"""Register a Telegram channel's webhook with the Bot API (setWebhook).

    manage.py telegram_set_webhook <channel uuid or id>   # one channel
    manage.py telegram_set_webhook --all                  # every active telegram channel
    manage.py telegram_set_webhook <channel> --delete     # deleteWebhook
    manage.py telegram_set_webhook <channel> --info       # getWebhookInfo

The URL is the channel's public webhook_url (PUBLIC_URL + /hooks/telegram/<uuid>/)
unless --url is given; the channel's secret_token goes along so Telegram sends
it back in X-Telegram-Bot-Api-Secret-Token. A channel without a secret token
gets a fresh random one first.
"""
from __future__ import annotations

import re
import secrets

from django.core.management.base import BaseCommand, CommandError

from channels_app.adapters.telegram.adapter import bot_call
from channels_app.models import Channel
from helpdesk.http import TransportError

SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
ALLOWED_UPDATES = ["message"]


class Command(BaseCommand):
    help = "Register (or delete, or show) the Telegram webhook of a telegram channel."

    def add_arguments(self, parser):
        parser.add_argument("channel", nargs="?", help="channel uuid or numeric id")
        parser.add_argument("--all", action="store_true", help="every active telegram channel")
        parser.add_argument("--url", help="override the public webhook URL (one channel only)")
        parser.add_argument("--delete", action="store_true", help="remove the webhook (deleteWebhook)")
        parser.add_argument("--info", action="store_true", help="show getWebhookInfo")
        parser.add_argument("--drop-pending-updates", action="store_true")

    def handle(self, *args, **opts):
        channels = self._channels(opts)
        if opts["url"] and len(channels) != 1:
            raise CommandError("--url applies to one channel only.")
        failed = 0
        for channel in channels:
            try:
                self._one(channel, opts)
            except TransportError as exc:
                failed += 1
                self.stderr.write(f"{channel.name} ({channel.uuid}): {exc.message}")
        if failed:
            raise CommandError(f"{failed} of {len(channels)} channel(s) failed.")

    def _channels(self, opts) -> list[Channel]:
        qs = Channel.objects.filter(kind="telegram")
        if opts["all"]:
            found = list(qs.filter(active=True))
            if not found:
                raise CommandError("No active telegram channel.")
            return found
        ref = opts.get("channel")
        if not ref:
            raise CommandError("Give a channel uuid or id, or --all.")
        channel = qs.filter(pk=int(ref)).first() if ref.isdigit() else None
        if channel is None:
            try:
                channel = qs.filter(uuid=ref).first()
            except Exception:  # not a uuid
                channel = None
        if channel is None:
            raise CommandError(f"No telegram channel {ref!r}.")
        return [channel]

    def _one(self, channel: Channel, opts) -> None:
        if not channel.get("bot_token"):
            raise CommandError(f"{channel.name}: the channel has no bot_token.")
        if opts["info"]:
            info = bot_call(channel, "getWebhookInfo").get("result") or {}
            self.stdout.write(f"{channel.name}: url={info.get('url', '')!r} "
                              f"pending={info.get('pending_update_count', 0)} "
                              f"last_error={info.get('last_error_message', '')!r}")
            return
        if opts["delete"]:
            bot_call(channel, "deleteWebhook", json={"drop_pending_updates": bool(opts["drop_pending_updates"])})
            self.stdout.write(self.style.SUCCESS(f"{channel.name}: webhook deleted."))
            return
        secret = channel.get("secret_token")
        if not secret:
            secret = secrets.token_urlsafe(32)
            channel.set_config({"secret_token": secret})
            channel.save(update_fields=["settings", "secrets"])
            self.stdout.write(f"{channel.name}: generated a new secret_token.")
        if not SECRET_RE.match(str(secret)):
            raise CommandError(f"{channel.name}: secret_token may only contain A-Z, a-z, 0-9, _ and - "
                               "(1 to 256 characters).")
        url = opts["url"] or channel.webhook_url
        if not url.startswith("https://"):
            self.stderr.write(f"{channel.name}: warning: Telegram only delivers to https URLs ({url}).")
        result = bot_call(channel, "setWebhook", json={
            "url": url, "secret_token": secret, "allowed_updates": ALLOWED_UPDATES,
            "drop_pending_updates": bool(opts["drop_pending_updates"]),
        })
        self.stdout.write(self.style.SUCCESS(
            f"{channel.name}: webhook set to {url} ({result.get('description') or 'ok'})."))
