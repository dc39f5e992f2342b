"""Named checks for Python tests that run real processes: each check prints one line
(ok/FAIL and what was checked) and the test goes on, so one run reports every failure;
finish() exits 1 if any failed."""
import sys

FAILURES = []


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message, flush=True)
    if not condition:
        FAILURES.append(message)
    return condition


def finish():
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


def require(condition, message):
    """As check, for tests whose later steps need this one: a failure exits 1 at once."""
    if not check(condition, message):
        sys.exit(1)
