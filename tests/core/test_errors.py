"""Error reports (the DEBUG page, error e-mails) never show the Redis password."""

from __future__ import annotations

from django.test import RequestFactory, override_settings
from django.views.debug import get_default_exception_reporter_filter

REDIS_URL = "redis://:s3cret-redis-pw@10.0.0.5:6379/0"


@override_settings(REDIS_URL=REDIS_URL, CELERY_BROKER_URL=REDIS_URL)
def test_it_hides_the_redis_urls_in_settings() -> None:
    get_default_exception_reporter_filter.cache_clear()  # the filter class is looked up once
    shown = get_default_exception_reporter_filter().get_safe_settings()
    assert "s3cret" not in shown["REDIS_URL"]
    assert "s3cret" not in shown["CELERY_BROKER_URL"]
    assert shown["ALLOWED_HOSTS"]  # the rest is still there to debug with


def test_it_hides_them_in_the_request_environment() -> None:
    request = RequestFactory().get("/", REDIS_URL=REDIS_URL)
    assert "s3cret" not in get_default_exception_reporter_filter().get_safe_request_meta(request)["REDIS_URL"]
