"""Django configured in code against the server in PGHOST/PGPORT/PGUSER/PGDATABASE."""

import os

import django
import pytest
from django.conf import settings

settings.configure(
    DATABASES={"default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ["PGHOST"], "PORT": os.environ["PGPORT"],
        "USER": os.environ["PGUSER"], "NAME": os.environ["PGDATABASE"],
    }},
    INSTALLED_APPS=["concurrency", "rvapp"],
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
)
django.setup()

from django.db import connection  # noqa: E402


def sql(statement, params=None):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


@pytest.fixture
def table():
    """Creates a model's table afresh and enables pg_rowversion on its version column."""
    created = []

    def make(model, mode="lenient", ignore=()):
        sql("CREATE EXTENSION IF NOT EXISTS pg_rowversion")
        with connection.schema_editor() as editor:
            sql(f"DROP TABLE IF EXISTS {model._meta.db_table}")
            editor.create_model(model)
        sql("SELECT rowversion.enable(%s, 'version', %s, %s::name[])", [model._meta.db_table, mode, list(ignore)])
        created.append(model)
        return model

    yield make
    for model in created:
        sql(f"DROP TABLE IF EXISTS {model._meta.db_table}")
