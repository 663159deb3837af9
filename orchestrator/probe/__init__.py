"""The seeded training probe: workload, fingerprint, environment capture and verdict.

Everything here imports only the stdlib, torch and numpy (and stdlib-only modules of this
package), because it runs inside bare target environments via PYTHONPATH.
"""
