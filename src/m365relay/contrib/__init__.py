"""Integrations of m365relay with other frameworks (Django). Each imports its framework lazily."""
