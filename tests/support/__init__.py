"""Test support, not part of the installed package: example studies, the browser driver, the import-circle check."""
