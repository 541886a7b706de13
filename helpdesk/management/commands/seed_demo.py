"""Demo data for `make run`: users, teams, one channel per kind, and about 200
customers with 1,000 conversations over the last 90 days (channel switches,
notes, resolutions, reopens, survey answers). Loaded once; running it again
keeps what is there."""
from __future__ import annotations

import random
import time
from datetime import timedelta

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from channels_app.models import Channel
from conversations import services
from conversations.inbound import InboundMessage
from conversations.models import EventKind, Team
from customers.models import Order
from helpdesk.models import Availability, Role, User
from metrics.models import SurveyInvitation

DEMO_USERS = [
    # username, first, last, role, team
    ("admin", "Ada", "Admin", Role.ADMIN, None),
    ("manager", "Maria", "Manager", Role.MANAGER, None),
    ("ana", "Ana", "Alves", Role.AGENT, "Billing"),
    ("bob", "Bob", "Baker", Role.AGENT, "Tech"),
]

CHANNELS = [
    ("email", "Support mail", {"address": "support@threadline.test", "auto_ack": False}),
    ("chat", "Website chat", {"allowed_origins": ["http://127.0.0.1:8000", "http://localhost:8000"],
                              "greeting": "Hi! How can we help?"}),
    ("whatsapp", "WhatsApp", {"phone_number_id": "100000001"}),
    ("messenger", "Messenger", {"page_id": "200000001"}),
    ("instagram", "Instagram", {"page_id": "300000001"}),
    ("telegram", "Telegram", {}),
    ("twitter", "X direct messages", {"user_id": "400000001"}),
    ("sms", "SMS", {"from_number": "+15550100000"}),
    ("phone", "Phone", {"from_number": "+15550100000"}),
    ("webform", "Contact form", {"address": "support@threadline.test"}),
    ("api", "Mobile app", {}),
]

IDENTITY_FOR = {
    "email": "email", "webform": "email", "api": "email", "chat": "chat", "whatsapp": "whatsapp", "sms": "phone",
    "phone": "phone", "messenger": "messenger", "instagram": "instagram", "telegram": "telegram",
    "twitter": "twitter",
}
KIND_WEIGHTS = {"email": 30, "chat": 22, "whatsapp": 14, "sms": 6, "phone": 8, "messenger": 5, "instagram": 4,
                "telegram": 3, "twitter": 2, "webform": 4, "api": 2}

FIRST = ["Kim", "Lee", "Sam", "Alex", "Jo", "Noor", "Ravi", "Mia", "Leo", "Zoe", "Omar", "Ines", "Yuki", "Luca",
         "Ada", "Finn", "Sara", "Tom", "Lena", "Ivan", "Maya", "Nico", "Ella", "Hugo"]
LAST = ["Lee", "Garcia", "Müller", "Rossi", "Kowalski", "Nguyen", "Silva", "Dubois", "Smith", "Jensen", "Haddad",
        "Tanaka", "Okafor", "Novak", "Costa", "Larsen"]
COMPANIES = ["", "", "Acme GmbH", "Globex", "Initech", "Umbrella", "Hooli", "Stark Ltd", "Wayne & Co"]
TOPICS = [
    ("Card declined at checkout", "My card keeps getting declined when I try to pay.", "Billing"),
    ("Refund for order", "I returned the item two weeks ago and still have no refund.", "Billing"),
    ("Invoice address wrong", "The invoice shows my old address, can you fix it?", "Billing"),
    ("Double charge", "I was charged twice for the same order.", "Billing"),
    ("App crashes on login", "The app closes as soon as I log in.", "Tech"),
    ("Password reset email missing", "I never get the password reset email.", "Tech"),
    ("Cannot connect device", "My device won't pair with the app anymore.", "Tech"),
    ("Delivery late", "My package was due yesterday, where is it?", None),
    ("Change my plan", "I'd like to switch to the yearly plan.", "Billing"),
    ("Data export", "How can I export all my data?", "Tech"),
]
REPLIES = ["Thanks for reaching out! Let me check that for you.", "I've looked into it and fixed the issue.",
           "Could you send me a screenshot?", "Sorry about that — the refund is on its way.",
           "I've updated your account, please try again.", "Happy to help! Anything else?"]
FOLLOW_UPS = ["Still not working, sorry.", "Thanks, that worked!", "Here is the screenshot.", "Any news on this?",
              "I also called about this yesterday."]
NOTES = ["Customer is on the enterprise plan.", "Escalated to payments team.", "Known bug, see JIRA-1234.",
         "@bob can you double-check the logs?"]
COMMENTS = ["Quick and friendly!", "Took too long.", "Great help, thanks.", "", "", "Solved on first try."]


class Command(BaseCommand):
    help = "Load demo users, channels and ~1,000 conversations (once)."

    def add_arguments(self, parser):
        parser.add_argument("--conversations", type=int, default=1000)
        parser.add_argument("--customers", type=int, default=200)
        parser.add_argument("--force", action="store_true", help="Load even if demo data exists")

    def handle(self, *args, conversations, customers, force, **options):
        users = self._users()
        if Channel.objects.filter(name="Support mail").exists() and not force:
            self.stdout.write("Demo data already loaded: keeping it.")
            return
        started = time.monotonic()
        channels = self._channels(users)
        rng = random.Random(42)
        people = [self._person(rng, i) for i in range(customers)]
        agents = [users["ana"], users["bob"]]
        now = timezone.now()
        total = 0
        with transaction.atomic():
            for n in range(conversations):
                # older conversations first so continuity behaves as in live traffic
                start = now - timedelta(days=90) + timedelta(seconds=(n / conversations) * 90 * 86400
                                                             + rng.randint(0, 3600))
                total += self._conversation(rng, people[rng.randrange(len(people))], channels, agents, start, now)
            self._orders(rng, now)
            # Demo history was seen by its visitors: without this the chat
            # channel's "email unseen replies" task would mail every old reply.
            from conversations.models import Message

            Message.objects.filter(direction="outbound", channel_kind="chat").update(delivery_status="read",
                                                                                    read_at=now)
        self.stdout.write(self.style.SUCCESS(
            f"Demo data: {conversations} conversations, {total} messages in {time.monotonic() - started:.1f}s"))

    # ------------------------------------------------------------------ setup
    def _users(self) -> dict:
        teams = {name: Team.objects.get_or_create(name=name)[0] for name in ("Billing", "Tech")}
        users = {}
        for username, first, last, role, team in DEMO_USERS:
            user, created = User.objects.get_or_create(
                username=username, defaults=dict(first_name=first, last_name=last, role=role,
                                                 email=f"{username}@threadline.test",
                                                 is_staff=role == Role.ADMIN, is_superuser=role == Role.ADMIN,
                                                 availability=Availability.ONLINE))
            if created:
                user.set_password(f"threadline-{username}")
                user.save()
            if team:
                teams[team].members.add(user)
            users[username] = user
        self.teams = teams
        return users

    def _channels(self, users) -> dict:
        channels = {}
        for kind, name, settings in CHANNELS:
            ch = Channel.objects.filter(kind=kind, name=name).first()
            if ch is None:
                ch = Channel(kind=kind, name=name, team=self.teams["Billing"] if kind != "twitter" else None)
                ch.set_config(settings)
                ch.save()
            channels[kind] = ch
        return channels

    def _person(self, rng: random.Random, i: int) -> dict:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        slug = f"{first}.{last}{i}".lower().replace("ü", "u")
        ids = {"email": f"{slug}@example.org", "chat": f"visitor-{i:04d}"}
        if rng.random() < 0.6:
            ids["phone"] = f"+1555{rng.randint(2000000, 9999999)}"
            ids["whatsapp"] = ids["phone"]
        for handle in ("messenger", "instagram", "telegram", "twitter"):
            if rng.random() < 0.15:
                ids[handle] = f"{handle[:2]}{100000 + i}"
        return {"name": f"{first} {last}", "ids": ids, "company": rng.choice(COMPANIES),
                "language": rng.choice(["en", "en", "en", "de", "es", "fr"])}

    def _kind_for(self, rng, person) -> str:
        kinds = [k for k in KIND_WEIGHTS if IDENTITY_FOR[k] in person["ids"]]
        return rng.choices(kinds, weights=[KIND_WEIGHTS[k] for k in kinds])[0]

    def _inbound(self, channel, person, text, at, **kw) -> InboundMessage:
        kind = IDENTITY_FOR[channel.kind]
        identities = [(kind, person["ids"][kind])]
        if kind != "email":
            identities.append(("email", person["ids"]["email"]))  # demo customers are known people
        meta = {}
        if channel.kind == "phone":
            meta["call"] = {"direction": "inbound", "duration": 60 + int(at.timestamp()) % 600, "outcome": "answered"}
        return InboundMessage(channel=channel, external_id=None, identities=identities, text=text, name=person["name"],
                              created_at=at, language=person["language"], meta=meta, **kw)

    # ------------------------------------------------------------------ one conversation
    def _conversation(self, rng, person, channels, agents, start, now) -> int:
        subject, text, team_name = rng.choice(TOPICS)
        kind = self._kind_for(rng, person)
        channel = channels[kind]
        res = services.ingest(self._inbound(channel, person, text, start, subject=subject, new_conversation=True))
        conv = res.message.conversation
        count = 1
        if person["company"] and not conv.customer.company:
            conv.customer.company = person["company"]
            conv.customer.save(update_fields=["company"])
        team = self.teams.get(team_name or rng.choice(["Billing", "Tech"]))
        agent = next((a for a in agents if team in a.teams.all()), agents[0])
        t = start + timedelta(seconds=rng.randint(30, 600))
        services.assign(conversation=conv, team=team, set_team=True, agent=None, at=t)
        recent = (now - start) < timedelta(days=6)
        if recent and rng.random() < 0.35:
            return count  # waiting for a first reply in the inbox
        t += timedelta(seconds=int(rng.expovariate(1 / 3600)) + 60)
        if t >= now:
            return count
        services.assign(conversation=conv, agent=agent, at=t - timedelta(seconds=30))
        services.reply(conversation=conv, author=agent, body=rng.choice(REPLIES), channel=channel, at=t,
                       deliver=False)
        count += 1
        if rng.random() < 0.2:
            services.add_note(conversation=conv, author=agent, body=rng.choice(NOTES), at=t + timedelta(seconds=20))
        # the customer writes again, sometimes on another channel (a channel switch)
        rounds = rng.choices([0, 1, 2], weights=[55, 35, 10])[0]
        for _ in range(rounds):
            t += timedelta(seconds=rng.randint(300, 20000))
            if t >= now:
                return count
            follow_kind = self._kind_for(rng, person) if rng.random() < 0.35 else kind
            services.ingest(self._inbound(channels[follow_kind], person, rng.choice(FOLLOW_UPS), t,
                                          reply_token=conv.reply_token))
            count += 1
            t += timedelta(seconds=int(rng.expovariate(1 / 1800)) + 60)
            if t >= now:
                return count
            services.reply(conversation=conv, author=agent, body=rng.choice(REPLIES), channel=channels[follow_kind],
                           at=t, deliver=False)
            count += 1
        if recent and rng.random() < 0.6:
            if rng.random() < 0.2:
                services.set_status(conversation=conv, status="pending", actor=agent)
            elif rng.random() < 0.1:
                services.snooze(conversation=conv, until=now + timedelta(hours=rng.randint(2, 48)), actor=agent)
            elif rng.random() < 0.3:
                services.set_priority(conversation=conv, priority=rng.choice(["high", "urgent"]), actor=agent)
            return count
        t += timedelta(seconds=rng.randint(60, 7200))
        if t >= now:
            return count
        services.resolve_conversation(conversation=conv, actor=agent, at=t)
        if rng.random() < 0.1 and t + timedelta(hours=30) < now:
            t += timedelta(hours=rng.randint(2, 30))
            services.ingest(self._inbound(channel, person, "Sorry, it happened again.", t,
                                          reply_token=conv.reply_token))
            count += 1
            t += timedelta(minutes=rng.randint(5, 90))
            services.reply(conversation=conv, author=agent, body=rng.choice(REPLIES), channel=channel, at=t,
                           deliver=False)
            count += 1
            t += timedelta(minutes=rng.randint(5, 60))
            services.resolve_conversation(conversation=conv, actor=agent, at=t)
        if rng.random() < 0.55:
            self._survey(rng, conv, agent, team, kind, t + timedelta(seconds=5), now)
        return count

    def _survey(self, rng, conv, agent, team, kind, invited_at, now) -> None:
        survey_kind = rng.choices(["csat", "nps", "ces"], weights=[70, 20, 10])[0]
        inv = SurveyInvitation.objects.create(conversation=conv, customer=conv.customer, kind=survey_kind,
                                              channel_kind=kind, agent=agent, team=team, invited_at=invited_at)
        services.record_event(conv, EventKind.SURVEY_SENT, at=invited_at, data={"survey": inv.pk, "kind": survey_kind})
        if rng.random() < 0.6:
            answered = invited_at + timedelta(minutes=rng.randint(1, 600))
            if answered >= now:
                return
            score = {"csat": rng.choices([1, 2, 3, 4, 5], weights=[5, 5, 10, 30, 50])[0],
                     "nps": rng.choices(range(11), weights=[1, 1, 1, 1, 2, 2, 3, 6, 10, 14, 12])[0],
                     "ces": rng.choices([1, 2, 3, 4, 5], weights=[40, 30, 15, 10, 5])[0]}[survey_kind]
            inv.score, inv.comment, inv.answered_at = score, rng.choice(COMMENTS), answered
            inv.save(update_fields=["score", "comment", "answered_at"])
            services.record_event(conv, EventKind.SURVEY_ANSWERED, at=answered, actor_type="customer",
                                  data={"survey": inv.pk, "kind": survey_kind, "score": score})

    def _orders(self, rng, now) -> None:
        from customers.models import Customer

        orders = []
        for customer in Customer.objects.all():
            for j in range(rng.choices([0, 1, 2, 4, 8], weights=[25, 30, 20, 15, 10])[0]):
                orders.append(Order(customer=customer, external_id=f"demo-{customer.pk}-{j}",
                                    amount=f"{rng.uniform(9, 400):.2f}", currency="USD",
                                    placed_at=now - timedelta(days=rng.randint(0, 365), minutes=rng.randint(0, 1440))))
        Order.objects.bulk_create(orders, ignore_conflicts=True)
