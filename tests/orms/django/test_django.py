"""Django and django-concurrency on tables versioned by pg_rowversion (issue 12): their own
versioning works unchanged, and the trigger adds protection where they have none."""

import pytest
from concurrency.exceptions import RecordModifiedError
from django.db import OperationalError, ProgrammingError, connection
from django.db.models import F
from django.utils import timezone

from conftest import sql
from rvapp.models import Article, AutoIncVersioned, Member, TimeVersioned, TriggerVersioned

CONCURRENCY_MODELS = [TimeVersioned, AutoIncVersioned, TriggerVersioned]


def stored(model, pk):
    return model.objects.values_list("name", "version").get(pk=pk)


# --- plain Django ---

def test_filter_update_pattern_checks_and_moves_the_version(table):
    """filter(version=read).update(version=read + 1): the WHERE clause checks, the trigger
    keeps read + 1, and a stale editor updates nothing."""
    table(Article)
    article = Article.objects.create(title="draft")
    read_by_a = read_by_b = article.version
    assert Article.objects.filter(pk=article.pk, version=read_by_a).update(title="A", version=read_by_a + 1) == 1
    assert Article.objects.filter(pk=article.pk, version=read_by_b).update(title="B", version=read_by_b + 1) == 0
    assert Article.objects.values_list("title", "version").get() == ("A", 2)
    # the same instance again, with the version it now knows: no double increment
    assert Article.objects.filter(pk=article.pk, version=2).update(title="A2", version=3) == 1
    assert Article.objects.values_list("title", "version").get() == ("A2", 3)


def test_plain_save_resends_the_in_memory_version(table):
    """save() sends every field, the version as read: the trigger checks it and moves it. A
    second save() of the same instance without refresh_from_db() states a version the row no
    longer has: a (correct) conflict."""
    table(Article)
    article = Article.objects.create(title="draft")
    article.title = "first"
    article.save()
    assert Article.objects.values_list("version", flat=True).get() == 2
    article.title = "second"
    with pytest.raises(OperationalError) as raised:
        article.save()
    assert raised.value.__cause__.sqlstate == "40001"
    article.refresh_from_db()
    article.title = "second"
    article.save()
    assert Article.objects.values_list("title", "version").get() == ("second", 3)


def test_two_editors_with_plain_save(table):
    table(Article)
    Article.objects.create(title="draft")
    a, b = Article.objects.get(), Article.objects.get()
    a.title = "A"
    a.save()
    b.title = "B"
    with pytest.raises(OperationalError) as raised:
        b.save()
    assert raised.value.__cause__.sqlstate == "40001"
    assert Article.objects.values_list("title", flat=True).get() == "A"


def test_raw_sql_through_djangos_connection(table):
    table(Article)
    article = Article.objects.create(title="draft")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE rvapp_article SET title = %s, version = %s WHERE id = %s", ["raw", 1, article.pk])
        with pytest.raises(OperationalError):
            cursor.execute("UPDATE rvapp_article SET title = %s, version = %s WHERE id = %s", ["stale", 1, article.pk])
    assert Article.objects.values_list("title", "version").get() == ("raw", 2)


def test_strict_mode_refuses_updates_that_do_not_state_the_version(table):
    table(Article, mode="strict")
    article = Article.objects.create(title="draft")
    with pytest.raises(ProgrammingError) as raised:
        Article.objects.filter(pk=article.pk).update(title="blind")
    assert raised.value.__cause__.sqlstate == "42P10"
    article.title = "stated"
    article.save()  # save() states the version it read
    assert Article.objects.values_list("title", "version").get() == ("stated", 2)


# --- django-concurrency: IntegerVersionField, AutoIncVersionField, TriggerVersionField ---

@pytest.mark.parametrize("model", CONCURRENCY_MODELS)
def test_two_saves_of_one_object(table, model):
    table(model)
    obj = model.objects.create(name="one")
    obj.name = "two"
    obj.save()
    obj.name = "three"
    obj.save()
    name, version = stored(model, obj.pk)
    assert name == "three"
    assert version == obj.version, "the instance knows the stored version"


@pytest.mark.parametrize("model", CONCURRENCY_MODELS)
def test_stale_editor_gets_record_modified_error(table, model):
    table(model)
    obj = model.objects.create(name="one")
    a, b = model.objects.get(pk=obj.pk), model.objects.get(pk=obj.pk)
    a.name = "A"
    a.save()
    b.name = "B"
    with pytest.raises(RecordModifiedError):
        b.save()
    assert stored(model, obj.pk)[0] == "A"


def test_a_time_based_version_is_kept_as_sent(table):
    """IntegerVersionField writes time.time() * 10**6 - offset: newer than the stored
    version, so the trigger keeps it (it used to refuse every such save)."""
    table(TimeVersioned)
    obj = TimeVersioned.objects.create(name="one")
    obj.name = "two"
    obj.save()
    assert obj.version > 10**12
    assert stored(TimeVersioned, obj.pk) == ("two", obj.version)


def test_trigger_version_field_reads_the_server_generated_version_back(table):
    """TriggerVersionField: the database moves the version; save(refetch=True) reads it."""
    table(TriggerVersioned)
    obj = TriggerVersioned.objects.create(name="one")
    obj.refresh_from_db()
    assert obj.version == 1
    obj.name = "two"
    obj.save(refetch=True)
    assert obj.version == 2 == stored(TriggerVersioned, obj.pk)[1]


@pytest.mark.parametrize("model", CONCURRENCY_MODELS)
def test_bulk_update_without_the_version_still_moves_it(table, model):
    """QuerySet.update() bypasses django-concurrency; in lenient mode the trigger moves the
    version anyway, so an instance read before it cannot overwrite the bulk change."""
    table(model)
    obj = model.objects.create(name="one")
    open_form = model.objects.get(pk=obj.pk)
    assert model.objects.filter(pk=obj.pk).update(name="bulk") == 1
    open_form.name = "form"
    with pytest.raises(RecordModifiedError):
        open_form.save()
    assert stored(model, obj.pk)[0] == "bulk"


def test_bulk_update_with_the_version(table):
    table(AutoIncVersioned)
    obj = AutoIncVersioned.objects.create(name="one")
    assert AutoIncVersioned.objects.filter(pk=obj.pk, version=obj.version).update(
        name="bulk", version=F("version") + 1) == 1
    assert stored(AutoIncVersioned, obj.pk) == ("bulk", obj.version + 1)


# --- bookkeeping columns ---

def test_update_last_login_does_not_turn_open_forms_into_conflicts(table):
    """Django's update_last_login writes one column; with ignore_columns it does not move the
    version, so a form opened before the login still saves."""
    table(Member, ignore=["last_login"])
    member = Member.objects.create(email="ann@example.com")
    open_form = Member.objects.get(pk=member.pk)
    Member.objects.filter(pk=member.pk).update(last_login=timezone.now())
    open_form.email = "anne@example.com"
    open_form.save()
    assert Member.objects.values_list("email", flat=True).get() == "anne@example.com"


def test_without_ignore_columns_the_login_is_a_change(table):
    table(Member)
    member = Member.objects.create(email="ann@example.com")
    open_form = Member.objects.get(pk=member.pk)
    Member.objects.filter(pk=member.pk).update(last_login=timezone.now())
    open_form.email = "anne@example.com"
    with pytest.raises(RecordModifiedError):
        open_form.save()
    assert sql("SELECT ignore_columns FROM rowversion.tables WHERE rel = 'rvapp_member'::regclass") == [([],)]
