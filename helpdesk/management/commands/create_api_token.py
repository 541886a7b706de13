"""manage.py create_api_token USERNAME [--name NAME]: prints the new token as the last word."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from helpdesk.tokens import token_create


class Command(BaseCommand):
    help = "Create an API token for a user. The token is printed once (the last word of the output)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="A label to recognise the token by.")

    def handle(self, *args, **options):
        User = get_user_model()
        try:
            user = User.objects.get(username=options["username"])
        except User.DoesNotExist:
            raise CommandError(f"No user {options['username']!r}.")
        if not user.is_active:
            raise CommandError(f"User {user.username!r} is inactive.")
        _token, raw = token_create(user=user, name=options["name"])
        self.stdout.write(f"API token for {user.username} (store it now, it is not shown again): {raw}")
