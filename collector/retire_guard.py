"""The guard both collectors apply before retiring what a listing leaves out of force.

A listing (a table of contents, a DILA global) that would take most of a code's stored rows out
of force is taken for a glitch rather than the law: nothing is retired. Each listed article
keeps at most one row in force, so at least `in_force - listed` rows would go.
"""

from __future__ import annotations

RETIRE_GUARD_FRACTION = 0.5  # more than this share of the code's in-force rows...
RETIRE_GUARD_MIN_ROWS = 20  # ...and more than this many rows


def retiring_looks_wrong(listed: int, in_force: int) -> bool:
    """True when a listing of `listed` articles in force would retire most of `in_force` rows
    (or all of them: an empty listing of a code that has rows)."""
    at_least = in_force - listed
    if listed == 0 and in_force > 0:
        return True
    return at_least > RETIRE_GUARD_FRACTION * in_force and at_least > RETIRE_GUARD_MIN_ROWS
