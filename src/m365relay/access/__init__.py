"""Who may use the relay: SMTP relay users (``relay_users``), administrators (``admins``), API keys
(``api_keys``), and the password rules they share (``passwords``).

Nothing is imported here, so importing one store does not pull in the others.
"""
