"""Models as their ORM users write them; pg_rowversion is enabled on their tables by the tests."""

from concurrency.fields import AutoIncVersionField, IntegerVersionField, TriggerVersionField
from django.db import models


class Article(models.Model):
    """Plain Django: an IntegerField the application checks itself."""
    title = models.CharField(max_length=100)
    version = models.IntegerField(default=1)


class TimeVersioned(models.Model):
    """django-concurrency: a time-based number, not the stored one + 1."""
    name = models.CharField(max_length=100)
    version = IntegerVersionField()


class AutoIncVersioned(models.Model):
    name = models.CharField(max_length=100)
    version = AutoIncVersionField()


class TriggerVersioned(models.Model):
    """django-concurrency's TriggerVersionField: the database moves the version, here
    pg_rowversion's trigger (django-concurrency's own trigger is not installed)."""
    name = models.CharField(max_length=100)
    version = TriggerVersionField()


class Member(models.Model):
    """A bookkeeping column next to a versioned form."""
    email = models.CharField(max_length=100)
    last_login = models.DateTimeField(null=True)
    version = IntegerVersionField()
