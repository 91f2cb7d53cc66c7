"""Plumbing every layer may import (fixtures, runners, validation, reports), with no heavy
dependency: atomic file writes (`common.atomic`), SHA-256 helpers (`common.hashing`) and the
cache root (`common.cache`). Imports only the standard library.
"""
