"""Imports a package that is not installed."""
import dwv_package_that_does_not_exist  # noqa: F401
