"""Runs every PromQL expression of a Grafana dashboard against a Prometheus server and
reports those that return no series (a misspelt metric, a label that does not exist,
a service not scraped).

  check_dashboard.py --prometheus http://127.0.0.1:9090 [--dashboard dashboards/microrl.json]
                     [--wait 60] [--time UNIX_SECONDS]

Grafana's interval variables are replaced before querying ($__rate_interval,
$__interval: --interval, default 1m). An expression that returns nothing is retried
until --wait seconds have passed (a freshly started Prometheus has not scraped yet).
--time evaluates the queries at that moment instead of now (a run that has ended).
Exit status 0 when every expression returned at least one series; 1 otherwise, with
the failing panels and expressions listed.
"""
import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def expressions(dashboard):
    """(panel title, expr) for every target of every panel, rows included."""
    found = []

    def visit(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((panel.get("title", "?"), target["expr"]))
            visit(panel.get("panels", []))

    visit(dashboard.get("panels", []))
    return found


def query(url, expr, at=None):
    """The result list of an instant query; raises on an HTTP or PromQL error."""
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    full = f"{url}/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(full, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:  # 400 carries PromQL's message
        body = json.load(error)
    if body.get("status") != "success":
        raise ValueError(body.get("error", "query failed"))
    return body["data"]["result"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--prometheus", required=True, help="base URL of the server")
    parser.add_argument("--dashboard", default=os.path.join(REPO, "dashboards",
                                                            "microrl.json"))
    parser.add_argument("--interval", default="1m")
    parser.add_argument("--wait", type=float, default=60)
    parser.add_argument("--time", type=float, default=None,
                        help="evaluate at this Unix time (default: now)")
    args = parser.parse_args()

    with open(args.dashboard) as f:
        dashboard = json.load(f)
    pending = expressions(dashboard)
    if not pending:
        sys.exit(f"{args.dashboard}: no PromQL expressions found")
    total = len(pending)
    fatal = {}  # PromQL errors: retrying will not help
    why = {}
    deadline = time.time() + args.wait
    while True:
        still = []
        for title, expr in pending:
            promql = (expr.replace("$__rate_interval", args.interval)
                      .replace("$__interval", args.interval))
            try:
                if not query(args.prometheus.rstrip("/"), promql, args.time):
                    still.append((title, expr))
                    why[(title, expr)] = "no series"
            except ValueError as error:
                fatal[(title, expr)] = str(error)
            except OSError as error:
                still.append((title, expr))
                why[(title, expr)] = f"Prometheus unreachable: {error}"
        pending = still
        if not pending or time.time() >= deadline:
            break
        time.sleep(2)
    failed = [(p, why[p]) for p in pending] + list(fatal.items())
    for (title, expr), reason in failed:
        print(f"FAIL [{title}] {expr}: {reason}")
    print(f"check_dashboard: {total - len(failed)}/{total} expressions of "
          f"{os.path.basename(args.dashboard)} returned series")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
