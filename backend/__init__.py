"""Test-package marker: gives the test modules below unique import names."""
