"""The seeded training probe: workload, recorder, runner, fingerprint, environment capture,
and what the probe is (``inputs``).

Everything here imports only the stdlib, torch and numpy (and stdlib-only modules of
envparity: errors, messages, files, determinism, determinism_settings), because it runs inside
bare target environments via PYTHONPATH (``tests/test_imports.py`` holds this). The verdict
over fingerprints is ``orchestrator.verdict`` (``probe.compare`` is its deprecated old name).
"""
