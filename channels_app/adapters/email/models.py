"""The IMAP cursor: where polling of one mailbox folder stopped."""
from __future__ import annotations

from django.db import models
from django.utils import timezone


class ImapCursor(models.Model):
    """UIDVALIDITY/UID of the last message ingested from a channel's folder.

    A new UIDVALIDITY means the server renumbered the folder: the cursor starts
    over and Message-ID dedupe keeps anything already stored from duplicating.
    """

    channel = models.ForeignKey("channels_app.Channel", on_delete=models.CASCADE, related_name="imap_cursors")
    folder = models.CharField(max_length=200, default="INBOX")
    uidvalidity = models.BigIntegerField(default=0)
    last_uid = models.BigIntegerField(default=0)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        app_label = "channels_app"
        constraints = [models.UniqueConstraint(fields=["channel", "folder"], name="imapcursor_unique_channel_folder")]

    def __str__(self) -> str:
        return f"{self.channel_id}:{self.folder} {self.uidvalidity}/{self.last_uid}"
