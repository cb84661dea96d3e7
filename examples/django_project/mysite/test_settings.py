"""Settings for the tests: the control plane that the tests start opens the same database file.

The tests run a real control plane, a separate process that loads these settings too (through
``DJANGO_SETTINGS_MODULE``, which it inherits with the rest of the environment). SQLite's test
database is in memory unless it is given a file, so it is a file here, in a fresh folder per test
session, handed on to the daemons through ``SHOP_TEST_DATABASE``.
"""

import atexit
import os
import shutil
import tempfile

from mysite.settings import *  # noqa: F403
from mysite.settings import DATABASES

_database = os.environ.get("SHOP_TEST_DATABASE")
if not _database:
    _folder = tempfile.mkdtemp(prefix="shop-tests-")
    atexit.register(shutil.rmtree, _folder, ignore_errors=True)  # the process that made it removes it
    _database = os.environ["SHOP_TEST_DATABASE"] = os.path.join(_folder, "db.sqlite3")

DATABASES = {"default": {**DATABASES["default"], "NAME": _database, "TEST": {"NAME": _database}}}
