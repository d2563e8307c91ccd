"""Helpers of the browser end-to-end tests: a real server, seeded runs, screenshots."""
