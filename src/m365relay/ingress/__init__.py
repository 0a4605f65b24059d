"""Ways mail comes in: the SMTP relay (the HTTP API lives in ``web``, the library in ``relay``)."""
