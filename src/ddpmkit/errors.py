"""The one exception type for bad user input.

Every check of user-supplied values (schedules, shapes, config, files) raises
:class:`InputError` with a one-line message naming the problem and the fix. The CLI turns it
into one line on stderr and exit code 2; anything else escaping is a bug (exit code 1).
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user: a one-line message that names the problem and the fix."""
