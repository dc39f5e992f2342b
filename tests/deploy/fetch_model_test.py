"""deploy/fetch_model.sh against a Hugging Face Hub endpoint on loopback (ctest
fetch_model). This machine cannot reach huggingface.co, so the test serves a real model
directory (the demo's tiny Qwen2 model, made by deploy/demo/make_demo.py) over the Hub's
HTTP API (the repository's revision info, file tree and resolve/ URLs, what the
huggingface_hub client reads; HF_ENDPOINT points the client at it, as for any Hub mirror). The download
itself is the venv's real `hf` CLI.

- a pinned revision downloads into DIR, byte for byte the served files, with the source
  recorded and no DIR.partial left;
- a weight file cut short is refused by the script's checks: DIR is not created and the
  bad download is not kept;
- an unknown revision, a gated repository (401) and an unreachable endpoint fail at
  once with the reason and, but for the unknown revision, where to put the directory;
- a DIR that already holds a model is left alone; an empty one is filled.

  fetch_model_test.py --source_dir REPO
"""
import argparse
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import check, finish, require  # noqa: E402

REPO_ID = "microrl-test/tiny-qwen2"
SHA = "0123456789abcdef0123456789abcdef01234567"


class Hub(http.server.BaseHTTPRequestHandler):
    model_dir = None
    truncate = set()   # files served cut short
    gated = False

    def log_message(self, *args):
        pass

    def files(self):
        return sorted(os.listdir(self.model_dir))

    def body(self, name):
        with open(os.path.join(self.model_dir, name), "rb") as f:
            data = f.read()
        return data[:len(data) // 2] if name in self.truncate else data

    def reply(self, head, status, data=b"", headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if status == 200:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status == 200 and not head:
            self.wfile.write(data)

    def route(self, head):
        """The Hub's revision info, file tree and resolve/ URLs of one repository at SHA."""
        if self.gated:
            return self.reply(head, 401)
        info = f"/api/models/{REPO_ID}/revision/"
        tree = f"/api/models/{REPO_ID}/tree/"
        resolve = f"/{REPO_ID}/resolve/"
        path = self.path.split("?")[0]
        as_json = [("Content-Type", "application/json")]
        if path.startswith(info) and path[len(info):] == SHA:
            siblings = [{"rfilename": f} for f in self.files()]
            return self.reply(head, 200, json.dumps({"id": REPO_ID, "modelId": REPO_ID,
                                                     "sha": SHA, "siblings": siblings}).encode(),
                              as_json)
        if path.startswith(tree) and path[len(tree):].split("/")[0] == SHA:
            entries = [{"type": "file", "path": f, "size": len(self.body(f)),
                        "oid": hashlib.sha1(self.body(f)).hexdigest()} for f in self.files()]
            return self.reply(head, 200, json.dumps(entries).encode(), as_json)
        if path.startswith(resolve):
            revision, _, name = path[len(resolve):].partition("/")
            if revision == SHA and name in self.files():
                data = self.body(name)
                return self.reply(head, 200, data, [
                    ("X-Repo-Commit", SHA),
                    ("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')])
        return self.reply(head, 404)

    def do_GET(self):
        self.route(False)

    def do_HEAD(self):
        self.route(True)


def fetch(repo, endpoint, revision, target, home):
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HOME=home, HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_ETAG_TIMEOUT="10")
    env.pop("HF_TOKEN", None)
    t = time.time()
    proc = subprocess.run(["bash", os.path.join(repo, "deploy", "fetch_model.sh"), REPO_ID,
                           revision, target], capture_output=True, text=True, env=env,
                          timeout=300)
    return proc, time.time() - t


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--source_dir", required=True)
    args = parser.parse_args()
    repo = os.path.abspath(args.source_dir)
    tmp = tempfile.mkdtemp(prefix="microrl-fetch-")
    try:
        subprocess.run([sys.executable, os.path.join(repo, "deploy", "demo", "make_demo.py"),
                        "--out", os.path.join(tmp, "demo"), "--seed", "0"], check=True,
                       stdout=subprocess.DEVNULL)
        served = os.path.join(tmp, "demo", "model")
        require(os.path.isfile(os.path.join(served, "model.safetensors")),
                "the served model directory has model.safetensors")
        Hub.model_dir = served
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        home = os.path.join(tmp, "hf_home")

        target = os.path.join(tmp, "models", "tiny")
        proc, _ = fetch(repo, endpoint, SHA, target, home)
        print(proc.stdout[-1500:] + proc.stderr[-1500:])
        check(proc.returncode == 0, f"a pinned revision downloads (exit {proc.returncode})")
        same = all(open(os.path.join(served, f), "rb").read() ==
                   open(os.path.join(target, f), "rb").read()
                   for f in os.listdir(served)) if os.path.isdir(target) else False
        check(same, "every served file arrives byte for byte")
        source = os.path.join(target, ".microrl-source.json")
        check(os.path.isfile(source) and json.load(open(source)) ==
              {"hub_id": REPO_ID, "revision": SHA}, "the source is recorded beside the model")
        check(not os.path.exists(target + ".partial"), "no .partial directory is left")

        empty = os.path.join(tmp, "models", "empty")  # as docker makes a missing mount
        os.makedirs(empty)
        proc, _ = fetch(repo, endpoint, SHA, empty, home)
        check(proc.returncode == 0 and os.path.isfile(os.path.join(empty, "config.json")),
              f"an empty DIR is filled, not nested into ({proc.returncode})")

        again, _ = fetch(repo, endpoint, SHA, target, home)
        check(again.returncode == 0 and "nothing to do" in again.stdout,
              "a directory that holds a model is left alone")

        Hub.truncate = {"model.safetensors"}
        cut = os.path.join(tmp, "models", "cut")
        proc, _ = fetch(repo, endpoint, SHA, cut, os.path.join(tmp, "hf_home2"))
        print(proc.stdout[-800:] + proc.stderr[-800:])
        check(proc.returncode != 0 and not os.path.exists(cut) and
              not os.path.exists(cut + ".partial"),
              f"a weight file cut short is refused, the directory not made and the bad "
              f"download not kept (exit {proc.returncode})")
        check("model.safetensors" in proc.stderr, "the refusal names the file")
        Hub.truncate = set()

        proc, seconds = fetch(repo, endpoint, "f" * 40, os.path.join(tmp, "models", "x"), home)
        check(proc.returncode == 3 and "no microrl-test/tiny-qwen2 at revision" in proc.stderr,
              f"an unknown revision fails at once ({proc.returncode}, {seconds:.1f} s): "
              f"{proc.stderr.strip()[:200]}")

        Hub.gated = True
        proc, seconds = fetch(repo, endpoint, SHA, os.path.join(tmp, "models", "g"), home)
        check(proc.returncode == 3 and "gated" in proc.stderr and "HF_TOKEN" in proc.stderr,
              f"a gated repository says how to get access ({proc.returncode}): "
              f"{proc.stderr.strip()[:200]}")
        Hub.gated = False
        server.shutdown()
        server.server_close()

        where = os.path.join(tmp, "models", "offline")
        proc, seconds = fetch(repo, endpoint, SHA, where, home)
        check(proc.returncode == 3 and seconds < 30 and where in proc.stderr and
              "put the Hugging Face model directory" in proc.stderr,
              f"offline: fails at once saying where to put the directory "
              f"({proc.returncode}, {seconds:.1f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
