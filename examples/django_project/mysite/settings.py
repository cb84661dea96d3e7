"""Settings of the example shop: Django's own, plus FastWorker's app and its one setting."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "fastworker.client.django",  # checks FASTWORKER, imports every app's tasks.py, makes the client
    "shop",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        # The web process and the control plane write to one file: wait for each other's locks.
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

FASTWORKER = {
    # The control plane's discovery address (fastworker-controlplane listens there by default).
    "CONTROL_PLANE": os.environ.get("FASTWORKER_CONTROL_PLANE", "tcp://127.0.0.1:5550"),
    # How long one request to it may take before ControlPlaneUnavailable.
    "REQUEST_TIMEOUT": 10.0,
}
