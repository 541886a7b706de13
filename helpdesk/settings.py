"""Threadline settings: everything comes from environment variables.

Every variable read here is documented in README.md with its default.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from .env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# pytest >= 8.2 exports PYTEST_VERSION while a session runs.
TESTING = "PYTEST_VERSION" in os.environ or "pytest" in Path(sys.argv[0]).name

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if DEBUG or TESTING:
        SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production-0123456789abcdef"
    else:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
# Key for secrets stored in the database (channel credentials). Defaults to one
# derived from SECRET_KEY; set it separately to rotate SECRET_KEY independently.
FIELD_ENCRYPTION_KEY = env_str("FIELD_ENCRYPTION_KEY", "")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if (DEBUG or TESTING) else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# The public base URL of this installation, used in links sent to customers
# (survey, portal, webhook URLs shown to admins).
PUBLIC_URL = (env_str("PUBLIC_URL", "") or f"http://127.0.0.1:{env_int('PORT', 8000)}").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "anymail",
    "helpdesk",
    "customers",
    "conversations",
    "channels_app",
    "metrics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "helpdesk.urls"
AUTH_USER_MODEL = "helpdesk.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "helpdesk.wsgi.application"
ASGI_APPLICATION = "helpdesk.asgi.application"

# --- Database -----------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", "") or f"sqlite:///{VAR_DIR / 'threadline.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("CONN_MAX_AGE", 0))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE avoids "database is locked" on lock upgrades when the web
        # server, the SMTP listener and the scheduler share the file.
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    if TESTING:
        # a file, not Django's shared-cache in-memory database: the live servers of the browser
        # tests write from several threads, and shared cache reports a lock conflict at once
        # ("database table is locked") instead of waiting out the busy timeout
        DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
IS_POSTGRES = DATABASES["default"]["ENGINE"].startswith("django.db.backends.postgresql")
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # the stock backend, plus transactions that begin with their first statement
    # where asked for (helpdesk.db.transactions.atomic: one round trip less)
    DATABASES["default"]["ENGINE"] = "helpdesk.db.postgresql"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker, channel layer, cache ------------------------------
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "helpdesk.cache.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "threadline")}}
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": env_str("CHANNEL_LAYER_PREFIX", "threadline")},
        }
    }
    CELERY_BROKER_URL = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "threadline"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://localhost/"
    CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = TESTING
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TIMEZONE = env_str("TIME_ZONE", "UTC")

# --- Internationalization ------------------------------------------------------
LANGUAGE_CODE = env_str("LANGUAGE_CODE", "en")
LANGUAGES = [("en", _("English")), ("de", _("German")), ("es", _("Spanish")), ("fr", _("French"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media --------------------------------------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media-not-served/"  # attachments are served by a permission-checking view only
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if (DEBUG or TESTING)
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG or TESTING
ATTACHMENT_MAX_BYTES = env_int("ATTACHMENT_MAX_BYTES", 25 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 30 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Email -------------------------------------------------------------------
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Threadline <support@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
ANYMAIL = {
    key: os.environ[key]
    for key in os.environ
    if key.startswith(("MAILGUN_", "SENDGRID_", "POSTMARK_", "AMAZON_SES_", "WEBHOOK_SECRET"))
}
if env_str("ANYMAIL_WEBHOOK_SECRET"):
    ANYMAIL["WEBHOOK_SECRET"] = env_str("ANYMAIL_WEBHOOK_SECRET")
SMTP_LISTENER_MAX_BYTES = env_int("SMTP_LISTENER_MAX_BYTES", 30 * 1024 * 1024)
SMTP_LISTENER_WORKERS = env_int("SMTP_LISTENER_WORKERS", 4)  # ingest threads of the SMTP listener
# per-sender inbound mail limit per email channel (channel settings rate_limit/rate_window override)
EMAIL_SENDER_RATE_LIMIT = env_int("EMAIL_SENDER_RATE_LIMIT", 30)
EMAIL_SENDER_RATE_WINDOW = env_int("EMAIL_SENDER_RATE_WINDOW", 600)

# --- Threadline behaviour (windows in seconds unless noted) -------------------
REOPEN_WINDOW = env_int("REOPEN_WINDOW", 72 * 3600)
SWITCH_WINDOW = env_int("SWITCH_WINDOW", 24 * 3600)
FOLLOW_UP_WINDOW = env_int("FOLLOW_UP_WINDOW", 30 * 24 * 3600)
CONTACT_GAP = env_int("CONTACT_GAP", 30 * 60)
FCR_WINDOW = env_int("FCR_WINDOW", 7 * 24 * 3600)
SURVEY_COOLDOWN = env_int("SURVEY_COOLDOWN", 7 * 24 * 3600)
RETENTION_WINDOW = env_int("RETENTION_WINDOW", 90 * 24 * 3600)
OUTBOX_MAX_ATTEMPTS = env_int("OUTBOX_MAX_ATTEMPTS", 8)
OUTBOX_STALE_AFTER = env_int("OUTBOX_STALE_AFTER", 120)
OUTBOUND_HTTP_TIMEOUT = env_int("OUTBOUND_HTTP_TIMEOUT", 10)
# Allow outbound HTTP (webhooks, providers) to private/loopback addresses.
# Off in production (SSRF); the tests and local fakes turn it on.
OUTBOUND_ALLOW_PRIVATE = env_bool("OUTBOUND_ALLOW_PRIVATE", DEBUG or TESTING)
# Outbound webhooks (helpdesk/webhooks.py): retried with backoff for this long,
# a subscription is disabled after this many failed attempts in a row.
WEBHOOK_RETRY_FOR = env_int("WEBHOOK_RETRY_FOR", 24 * 3600)
WEBHOOK_DISABLE_AFTER = env_int("WEBHOOK_DISABLE_AFTER", 20)
WEBHOOK_LOG_DAYS = env_int("WEBHOOK_LOG_DAYS", 30)  # delivery log kept this many days
# Largest API request body (413 above it).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 30 * 1024 * 1024)
CHAT_OFFLINE_EMAIL_DELAY = env_int("CHAT_OFFLINE_EMAIL_DELAY", 300)
# visitor messages ingested in this many worker processes per ASGI process
# (channels_app.adapters.chat.ingest_pool; needs Redis); 0: in threads
CHAT_INGEST_PROCESSES = env_int("CHAT_INGEST_PROCESSES", 0)
# the ASGI processes' GIL switch interval in microseconds (Python's default:
# 5000): a thread (the chat ingest threads, Channels' sync thread) whose
# database or Redis reply has arrived waits up to this long for the event loop
# to let go of the GIL, once per round trip; 0 leaves Python's default
ASGI_SWITCH_INTERVAL_US = env_int("ASGI_SWITCH_INTERVAL_US", 1000)
# otherwise in this many threads per ASGI process, each keeping its database connection
CHAT_INGEST_THREADS = env_int("CHAT_INGEST_THREADS", 4)
# SLA warnings pushed to agents (metrics.sla_tasks): warn this long before a due
# time, either a share of the target ("20%") or seconds ("900"); a breach is
# announced only while its due time is at most SLA_BREACH_LOOKBACK seconds old.
SLA_WARNING_BEFORE = env_str("SLA_WARNING_BEFORE", "20%")
SLA_BREACH_LOOKBACK = env_int("SLA_BREACH_LOOKBACK", 3600)
# How long the customer portal's magic link (emailed after a /support/ form) stays valid.
PORTAL_LINK_MAX_AGE = env_int("PORTAL_LINK_MAX_AGE", 14 * 24 * 3600)

# --- Security ------------------------------------------------------------------
_secure_default = not (DEBUG or TESTING)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", _secure_default)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", _secure_default)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", _secure_default)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if _secure_default else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", _secure_default)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", _secure_default)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- REST framework ----------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "helpdesk.api.authentication.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "helpdesk.api.schema.AutoSchema",
    "DEFAULT_PARSER_CLASSES": [
        "helpdesk.api.parsers.JSONParser",
        "helpdesk.api.parsers.FormParser",
        "helpdesk.api.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "helpdesk.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["helpdesk.api.throttling.TokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"token": env_str("API_RATE_LIMIT", "1200/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Threadline API",
    "DESCRIPTION": "REST API of Threadline, the omnichannel helpdesk.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets served locally (works offline): drf-spectacular-sidecar
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Logging -------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}, "celery.app.trace": {"level": "WARNING"},
                # httpx logs every request URL at INFO; some providers put tokens in URLs (Telegram /bot<token>/)
                "httpx": {"level": "WARNING"}, "httpcore": {"level": "WARNING"}},
}
