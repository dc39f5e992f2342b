"""`learner eval --openai_base_url`: the same pass@k tables from an OpenAI endpoint.

  eval_openai_test.py --learner BIN --rollout_server BIN --reward_service BIN
                      --source_dir SRC

Makes the demo's model and data (make_demo.py) and a shortened warm-up adapter (learner
sft), starts
reward_service and rollout_server (the adapter as version 3, --openai_port, a token), then
runs `learner eval` twice on the same held-out problems, seed and sampling: once over gRPC,
once over HTTP through the server's OpenAI endpoint (--openai_model=demo@v3, with
--compare_base and --openai_base_model=demo). The eval.json of both must agree in every
figure (pass@k, accuracy, mean reward, length and entropy, for the adapter and the base
model). SIGTERM ends an evaluation in the middle at once. Then the errors: an unknown model, a wrong key, an unreachable URL and --adapter
with --openai_base_url each exit 1 with a message naming the problem.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "support"))
import service_process  # noqa: E402
from checks import require  # noqa: E402

TOKEN = "eval-openai-test-token-0123"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--learner", required=True)
    parser.add_argument("--rollout_server", required=True)
    parser.add_argument("--reward_service", required=True)
    parser.add_argument("--source_dir", required=True)
    args = parser.parse_args()
    args.learner = os.path.abspath(args.learner)

    with tempfile.TemporaryDirectory(prefix="eval_openai_") as work:
        subprocess.run([sys.executable,
                        os.path.join(args.source_dir, "deploy", "demo", "make_demo.py"),
                        "--out", work, "--test", "24"],
                       check=True, stdout=subprocess.DEVNULL)
        model_dir = os.path.join(work, "model")
        # A warmed-up adapter (the demo's warm-up, shortened), so that some answers are
        # right and pass@k is not all zeros.
        for name in ("sft.yaml", "grpo.yaml"):  # grpo.yaml: the demo's prompt for eval
            with open(os.path.join(args.source_dir, "deploy", "demo", name)) as f:
                text = f.read()
            with open(os.path.join(work, name), "w") as f:
                f.write(text)
        proc = subprocess.run([args.learner, "sft", "--config=sft.yaml",
                               "--set=run.max_steps=650;run.seed=0"], cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=900)
        require(proc.returncode == 0, f"learner sft made an adapter: {proc.stdout[-1000:]}")
        adapter = os.path.join(work, "runs", "sft", "adapter")
        token_file = os.path.join(work, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN)

        port = service_process.free_port()
        env = dict(os.environ, MICRORL_AUTH_TOKEN=TOKEN)
        reward, reward_ready = service_process.start(
            args.reward_service, work, "reward_service", [f"--auth_token_file={token_file}"])
        rollout, rollout_ready = service_process.start(
            args.rollout_server, work, "rollout_server",
            [f"--model={model_dir}", f"--openai_port={port}", "--served_model_name=demo",
             f"--auth_token_file={token_file}", f"--adapter={adapter}",
             "--adapter_version=3", "--max_model_len=256", "--kv_cache_mb=64"])
        failures = []
        try:
            common = [args.learner, "eval", "--config=grpo.yaml", f"--model={model_dir}",
                      f"--datasets=test={os.path.join(work, 'data', 'test.jsonl')}",
                      "--samples=4", "--ks=1,2,4", "--temperature=1.0", "--top_p=0.5",
                      "--max_tokens=40", "--compare_base",
                      f"--reward_address=127.0.0.1:{reward_ready['grpc_port']}"]
            base_url = f"http://127.0.0.1:{port}/v1"

            def run(extra, out, key=TOKEN):
                run_env = dict(env, OPENAI_API_KEY=key)
                return subprocess.run(common + extra + [f"--out={out}"], env=run_env, cwd=work,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, timeout=600)

            grpc_out, http_out = os.path.join(work, "grpc"), os.path.join(work, "http")
            proc = run([f"--rollout_address=127.0.0.1:{rollout_ready['grpc_port']}"],
                       grpc_out)
            require(proc.returncode == 0, f"learner eval over gRPC exits 0: {proc.stdout[-1500:]}")
            proc = run([f"--openai_base_url={base_url}", "--openai_model=demo@v3",
                        "--openai_base_model=demo"], http_out)
            require(proc.returncode == 0,
                  f"learner eval over the OpenAI endpoint exits 0: {proc.stdout[-1500:]}")
            require("evaluating demo@v3 at " + base_url in proc.stdout,
                  "it says what it evaluates")
            grpc_json = json.load(open(os.path.join(grpc_out, "eval.json")))
            http_json = json.load(open(os.path.join(http_out, "eval.json")))
            print(json.dumps(http_json, indent=1)[:1500])

            def figures(rows):
                keep = ("dataset", "problems", "samples", "accuracy", "mean_reward",
                        "mean_length", "mean_entropy", "adapter_version")
                return [{k: v for k, v in row.items()
                         if k in keep or k.startswith("pass@")} for row in rows]
            g = figures(grpc_json["results"] if "results" in grpc_json else grpc_json)
            h = figures(http_json["results"] if "results" in http_json else http_json)
            require(len(g) == 2 and g == h,
                  f"every figure of eval.json agrees (adapter and base): {g} vs {h}")
            require(all(row["mean_length"] > 0 for row in h),
                  "the completions have lengths (from the returned log-probs)")
            require(h[0]["pass@1"] > 0 and h[0]["pass@4"] > h[0]["pass@1"],
                  f"pass@k is not trivial: pass@1 {h[0]['pass@1']:.3f}, "
                  f"pass@4 {h[0]['pass@4']:.3f}")

            # SIGTERM (or Ctrl-C) ends an evaluation in the middle at once; the servers
            # go on serving (the runs below use them).
            stopped_out = os.path.join(work, "stopped")
            proc = subprocess.Popen(
                common + [f"--rollout_address=127.0.0.1:{rollout_ready['grpc_port']}",
                          "--samples=1024", f"--out={stopped_out}"],
                env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(3)
            if proc.poll() is not None:
                require(False, "a 1024-sample evaluation is still running after 3 s: " +
                        proc.communicate()[0][-1500:])
            sent = time.time()
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
            seconds = time.time() - sent
            require(proc.returncode == -signal.SIGTERM and seconds < 10 and
                    not os.path.exists(os.path.join(stopped_out, "eval.json")),
                    f"SIGTERM ends learner eval (exit {proc.returncode}, {seconds:.1f} s after "
                    "the signal, no eval.json)")

            # Errors name the problem.
            proc = run([f"--openai_base_url={base_url}", "--openai_model=nope"],
                       os.path.join(work, "e1"))
            require(proc.returncode == 1 and "nope" in proc.stdout and "404" in proc.stdout,
                  f"an unknown model: {proc.stdout.strip()[-300:]}")
            proc = run([f"--openai_base_url={base_url}"], os.path.join(work, "e2"),
                       key="wrong-key-wrong-key-0")
            require(proc.returncode == 1 and "401" in proc.stdout,
                  f"a wrong key: {proc.stdout.strip()[-300:]}")
            dead = service_process.free_port()
            proc = run([f"--openai_base_url=http://127.0.0.1:{dead}/v1"],
                       os.path.join(work, "e3"))
            require(proc.returncode == 1 and str(dead) in proc.stdout,
                  f"nothing listening: {proc.stdout.strip()[-300:]}")
            proc = run([f"--openai_base_url={base_url}", "--problems=2", "--ks=1",
                        "--samples=1", "--nocompare_base"], os.path.join(work, "d"))
            require(proc.returncode == 0 and f"evaluating demo@v3 at {base_url}" in proc.stdout,
                  "without --openai_model: the last model listed (the newest adapter)")
            proc = run(["--openai_base_url=http://127.0.0.1:99999999999/v1"],
                       os.path.join(work, "e5"))
            require(proc.returncode == 1 and "bad port" in proc.stdout,
                  f"a port past 65535: {proc.stdout.strip()[-300:]}")
            proc = run([f"--openai_base_url={base_url}", f"--adapter={adapter}"],
                       os.path.join(work, "e4"))
            require(proc.returncode == 1 and "--adapter" in proc.stdout,
                  f"--adapter with --openai_base_url: {proc.stdout.strip()[-300:]}")
        finally:
            for proc, name in ((rollout, "rollout_server"), (reward, "reward_service")):
                failure = service_process.stop(proc, name)
                if failure:
                    failures.append(failure)
        require(not failures, f"the services stop cleanly {failures}")
    print("learner eval over an OpenAI endpoint: all checks passed")


if __name__ == "__main__":
    main()
