"""The verdict over fingerprints, in one place: how two runs compare, and how that is said.

* ``compare``: fingerprints against each other: bitwise, within tolerance, or diverged (the
  first stage and step that differ, the values there, the likely causes ranked);
* ``references``: runs against the committed references of their hardware class and of every
  other class, and runs of several machines (CI artifacts) against each other;
* ``wording``: the one wording of a result, used by ``envparity compare``, ``verify``'s table,
  its notes and the HTML report, and the CI summary.

The tolerances these take are ``orchestrator.tolerances.Tolerances`` (the spec holds them);
the references themselves (what was recorded, when, and whether it is stale) are
``orchestrator.references``. Nothing is imported here, so that importing one module of the
package imports only what that module needs.
"""
