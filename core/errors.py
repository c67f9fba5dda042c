"""What Django's error reports (the DEBUG page, error e-mails) may show of settings and requests."""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter


class SettingsFilter(SafeExceptionReporterFilter):
    """Django's own filter, which hides names with KEY, PASS, TOKEN…, plus the Redis URLs.

    REDIS_URL (and the broker URL copied from it) carry the Redis password in a deploy, and
    Django's default list does not recognise them. The same pattern cleanses request.META, where
    a development server copies the environment.
    """

    hidden_settings = re.compile("API|TOKEN|KEY|SECRET|PASS|SIGNATURE|REDIS_URL|BROKER_URL", flags=re.IGNORECASE)
