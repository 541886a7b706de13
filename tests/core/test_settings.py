"""Configuration from the environment: production settings pass check --deploy,
REDIS_URL switches the backends, SECRET_KEY is required without DEBUG."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_manage(args, extra_env, tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_VERSION", "DEBUG", "SECRET_KEY", "REDIS_URL", "DATABASE_URL", "ALLOWED_HOSTS",
                     "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update({"VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "helpdesk.settings"})
    env.update(extra_env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


PROD = {"SECRET_KEY": "k" * 20 + "-production-secret-key-with-enough-entropy-0123456789",
        "ALLOWED_HOSTS": "help.example.com", "DEBUG": "0"}


def test_production_settings_pass_check_deploy(tmp_path):
    result = run_manage(["check", "--deploy", "--fail-level", "WARNING"], PROD, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_secret_key_is_required_without_debug(tmp_path):
    result = run_manage(["check"], {"DEBUG": "0", "ALLOWED_HOSTS": "x"}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_redis_url_switches_broker_layer_and_cache(tmp_path):
    code = ("from django.conf import settings as s; print(s.CELERY_BROKER_URL, s.CELERY_TASK_ALWAYS_EAGER, "
            "s.CHANNEL_LAYERS['default']['BACKEND'], s.CACHES['default']['BACKEND'])")
    without = run_manage(["shell", "--no-imports", "-c", code], {"DEBUG": "1"}, tmp_path)
    assert without.stdout.split() == ["memory://localhost/", "True", "channels.layers.InMemoryChannelLayer",
                                      "django.core.cache.backends.locmem.LocMemCache"], without.stderr
    with_redis = run_manage(["shell", "--no-imports", "-c", code], {"DEBUG": "1", "REDIS_URL": "redis://127.0.0.1:6379/3"}, tmp_path)
    assert with_redis.stdout.split() == ["redis://127.0.0.1:6379/3", "False",
                                         "channels_redis.pubsub.RedisPubSubChannelLayer",
                                         "helpdesk.cache.RedisCache"], with_redis.stderr


def test_database_url_defaults_to_sqlite_under_var(tmp_path):
    code = "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'])"
    result = run_manage(["shell", "--no-imports", "-c", code], {"DEBUG": "1"}, tmp_path)
    engine, name = result.stdout.split()
    assert engine == "django.db.backends.sqlite3" and name == str(tmp_path / "threadline.sqlite3")


def test_the_asgi_process_shortens_the_gil_switch_interval(tmp_path):
    """ASGI_SWITCH_INTERVAL_US (default 1000): set when helpdesk.asgi loads; 0
    leaves Python's 5 ms."""
    code = "import sys, helpdesk.asgi; print(sys.getswitchinterval())"
    default = run_manage(["shell", "--no-imports", "-c", code], {"DEBUG": "1"}, tmp_path)
    assert default.stdout.split() == ["0.001"], default.stderr
    off = run_manage(["shell", "--no-imports", "-c", code], {"DEBUG": "1", "ASGI_SWITCH_INTERVAL_US": "0"}, tmp_path)
    assert off.stdout.split() == ["0.005"], off.stderr
