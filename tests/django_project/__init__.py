"""A minimal Django project for m365relay's Django email backend tests (settings only)."""
