"""Test support, not part of the installed package: example studies and the browser driver."""
