"""Test-only helpers that the tests and the benchmarks both use: seeded signals with known onsets
(:mod:`testkit.signals`) and a WebRTC publishing client (:mod:`testkit.webrtc_client`).

A top-level package of its own, beside ``server/``, ``tests/`` and ``bench/``: ``bench/`` must not import
from ``tests/`` (a test suite is no library), and this code must not ship in the served package
(``pyproject.toml`` installs ``server*`` only). Both import it from the repository root, which pytest and
every bench script put on ``sys.path``.
"""
