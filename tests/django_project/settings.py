"""Django settings for the email backend tests. The tests apply them with ``settings.configure`` and set
the relay-specific values (``M365RELAY_*``) per test with ``override_settings``."""

SECRET_KEY = "m365relay-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
EMAIL_BACKEND = "m365relay.contrib.django.EmailBackend"
DEFAULT_FROM_EMAIL = "noreply@example.invalid"  # the tests use the sandbox's mailbox
DEFAULT_CHARSET = "utf-8"
