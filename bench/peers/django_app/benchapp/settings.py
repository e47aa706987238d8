"""Django settings for the bench peer: no database, no middleware, channel layer from the environment.

BENCH_LAYER=memory (InMemoryChannelLayer, one process) or redis (channels_redis RedisChannelLayer at
BENCH_REDIS_URL with key prefix BENCH_PREFIX, several processes).
"""

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["daphne", "channels"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "benchapp.urls"
ASGI_APPLICATION = "benchapp.asgi.application"
DATABASES: dict = {}
USE_TZ = True
LOGGING_CONFIG = None

if os.environ.get("BENCH_LAYER", "memory") == "redis":
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ["BENCH_REDIS_URL"]],
                "prefix": os.environ.get("BENCH_PREFIX", "asgi"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
