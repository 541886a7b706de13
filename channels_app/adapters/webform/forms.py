from __future__ import annotations

import mimetypes
import os
import re

from django import forms
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

DEFAULT_EXTENSIONS = ["png", "jpg", "jpeg", "gif", "webp", "heic", "pdf", "txt", "csv", "log", "doc", "docx",
                      "xls", "xlsx", "odt", "ods", "zip", "mp4", "mov"]
DEFAULT_MAX_FILES = 5
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"multiple": True}))
        kwargs.setdefault("required", False)
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        if isinstance(data, (list, tuple)):
            return [super(MultipleFileField, self).clean(d, initial) for d in data if d]
        return [super().clean(data, initial)] if data else []


class AttachmentsMixin:
    """Size, count and type limits from the web form channel's settings."""

    def __init__(self, *args, channel=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.channel = channel

    def limits(self):
        get = self.channel.get if self.channel is not None else (lambda key, default=None: default)
        return (int(get("max_files", DEFAULT_MAX_FILES) or DEFAULT_MAX_FILES),
                int(get("max_file_bytes", DEFAULT_MAX_FILE_BYTES) or DEFAULT_MAX_FILE_BYTES),
                [e.lower().lstrip(".") for e in (get("allowed_extensions") or DEFAULT_EXTENSIONS)])

    def clean_attachments(self):
        files = self.cleaned_data.get("attachments") or []
        max_files, max_bytes, extensions = self.limits()
        if len(files) > max_files:
            raise forms.ValidationError(ngettext("You can attach at most %(n)d file.",
                                                 "You can attach at most %(n)d files.", max_files) % {"n": max_files})
        for f in files:
            ext = os.path.splitext(f.name)[1].lower().lstrip(".")
            if ext not in extensions:
                raise forms.ValidationError(_("%(name)s: this type of file is not accepted (allowed: %(types)s).")
                                            % {"name": f.name, "types": ", ".join(extensions)})
            if f.size > max_bytes:
                raise forms.ValidationError(_("%(name)s is too large (at most %(mb).0f MB per file).")
                                            % {"name": f.name, "mb": max_bytes / 1024 / 1024})
        return files

    def attachment_payload(self) -> list[dict]:
        import base64

        result = []
        for f in self.cleaned_data.get("attachments") or []:
            f.seek(0)
            # the type follows the (allowed) extension, never the browser's claim
            ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
            result.append({"filename": os.path.basename(f.name)[:200], "content_type": ctype,
                           "content_base64": base64.b64encode(f.read()).decode()})
        return result


class SupportForm(AttachmentsMixin, forms.Form):
    name = forms.CharField(label=_("Your name"), max_length=200)
    email = forms.EmailField(label=_("Your email address"), max_length=320)
    subject = forms.CharField(label=_("Subject"), max_length=200, required=False)
    message = forms.CharField(label=_("How can we help?"), max_length=20000, widget=forms.Textarea(attrs={"rows": 7}))
    attachments = MultipleFileField(label=_("Attachments"))
    # honeypot: hidden from people by CSS, bots fill it in
    website = forms.CharField(label=_("Leave this field empty"), required=False,
                              widget=forms.TextInput(attrs={"tabindex": "-1", "autocomplete": "off"}))


class PortalReplyForm(AttachmentsMixin, forms.Form):
    message = forms.CharField(label=_("Your reply"), max_length=20000, widget=forms.Textarea(attrs={"rows": 5}))
    attachments = MultipleFileField(label=_("Attachments"))


class PortalLinkForm(forms.Form):
    email = forms.EmailField(label=_("Your email address"), max_length=320)


def parse_duration(value: str) -> int:
    """Seconds from "95", "1:35" or "1:02:03"."""
    value = (value or "").strip()
    if re.fullmatch(r"\d+", value):
        return int(value)
    m = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{2})", value)
    if not m:
        raise forms.ValidationError(_("Enter seconds or minutes:seconds, for example 4:30."))
    hours, minutes, seconds = int(m.group(1) or 0), int(m.group(2)), int(m.group(3))
    return hours * 3600 + minutes * 60 + seconds


class LogCallForm(forms.Form):
    direction = forms.ChoiceField(label=_("Direction"), choices=[
        ("inbound", _("The customer called")), ("outbound", _("We called the customer"))])
    duration = forms.CharField(label=_("Duration"), max_length=12,
                               help_text=_("Seconds or minutes:seconds"))
    outcome = forms.ChoiceField(label=_("Outcome"), choices=[
        ("answered", _("Answered")), ("voicemail", _("Voicemail")), ("missed", _("Missed")),
        ("no_answer", _("No answer")), ("busy", _("Busy")), ("failed", _("Failed"))])
    summary = forms.CharField(label=_("Summary"), max_length=10000, widget=forms.Textarea(attrs={"rows": 4}))
    at = forms.DateTimeField(label=_("When"), required=False,
                             widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))

    def clean_duration(self):
        seconds = parse_duration(self.cleaned_data["duration"])
        if seconds > 24 * 3600:
            raise forms.ValidationError(_("A call cannot last more than 24 hours."))
        return seconds

