"""Operator tooling (the `certrenew` CLI and its local server). Nothing in the library imports this package."""
