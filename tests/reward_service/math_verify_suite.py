"""microrl's default scoring against the verdicts math-verify's own test suite asserts.

  math_verify_suite.py --reward_service BIN [--data FILE] [--no_math_verify]

data/math_verify_suite.jsonl holds the cases of math-verify's public test suite
(test_all, test_boxed, test_numina_cases, test_open_thoughts, test_strict, test_yujianll):
for each, the gold string, the prediction string, the verdict the suite asserts and the
options that test passes (extraction targets, float precision, strict, allow_set_relation_comp).
Each case is scored by `reward_service score` in its one default mode (the prediction as a
completion, the gold as the ground truth; no per-case options: microrl has one mode), and,
unless --no_math_verify, by the installed math-verify with the case's own options, which
checks that the data still carries the suite's verdicts. Prints the agreement per test and
overall, and every case microrl decides against the suite with its options. Fails if
microrl agrees on fewer than 98% of the cases, or accepts any pair the suite asserts is
not equal (a false accept).
"""
import argparse
import atexit
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def math_verify_verdicts(cases):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    verdicts = []
    for case in cases:
        targets = []
        for kind in case["match_types"]:
            if kind == "latex":
                targets.append(LatexExtractionConfig(
                    boxed_match_priority=case.get("boxed_match_priority", 0)))
            else:
                targets.append(ExprExtractionConfig())
        try:
            verdicts.append(bool(verify(
                parse(case["gold"], targets), parse(case["pred"], targets),
                float_rounding=case.get("precision", 6), strict=case.get("strict", True),
                allow_set_relation_comp=case.get("allow_set_relation_comp", False))))
        except Exception:  # a crash of the oracle counts as a disagreement
            verdicts.append(None)
    return verdicts


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reward_service", required=True)
    parser.add_argument("--data", default=os.path.join(HERE, "data", "math_verify_suite.jsonl"))
    parser.add_argument("--no_math_verify", action="store_true")
    args = parser.parse_args()
    with open(args.data, encoding="utf-8") as f:
        cases = [json.loads(line) for line in f if line.strip()]

    work = tempfile.mkdtemp(prefix="math_verify_suite.")
    atexit.register(shutil.rmtree, work, True)
    with open(os.path.join(work, "in.jsonl"), "w", encoding="utf-8") as f:
        for i, case in enumerate(cases):
            f.write(json.dumps({"id": str(i), "completion": case["pred"],
                                "ground_truth": case["gold"]}) + "\n")
    subprocess.run([args.reward_service, "score", f"--in={work}/in.jsonl",
                    f"--out={work}/out.jsonl", "--threads=1"], check=True)
    with open(os.path.join(work, "out.jsonl"), encoding="utf-8") as f:
        ours = [json.loads(line) for line in f]

    per_test = collections.OrderedDict()
    wrong = []
    for case, out in zip(cases, ours):
        ok = out["correct"] == case["expected"]
        stats = per_test.setdefault(case["source"], [0, 0])
        stats[0] += ok
        stats[1] += 1
        if not ok:
            wrong.append((case, out))
    agree = sum(a for a, _ in per_test.values())
    for source, (a, n) in per_test.items():
        print(f"  {a:3d}/{n:3d}  {source}")
    negatives = [c for c in cases if not c["expected"]]
    false_accepts = [(c, o) for c, o in wrong if not c["expected"]]
    print(f"microrl agrees with the suite's asserted verdicts on {agree}/{len(cases)} cases "
          f"({100 * agree / len(cases):.1f}%); false accepts among the {len(negatives)} "
          f"negative cases: {len(false_accepts)}")
    default = [c for c in cases if c.get("precision", 6) == 6 and c.get("strict", True)
               and not c.get("allow_set_relation_comp", False)]
    default_agree = sum(o["correct"] == c["expected"] for c, o in zip(cases, ours)
                        if c in default)
    print(f"  on the {len(default)} cases run with math-verify's default options: "
          f"{default_agree}/{len(default)}")
    if not args.no_math_verify:
        theirs = math_verify_verdicts(cases)
        same = sum(t == c["expected"] for t, c in zip(theirs, cases))
        print(f"math-verify (installed) agrees with the suite's verdicts on {same}/{len(cases)}")
    for case, out in wrong:
        options = {k: v for k, v in case.items()
                   if k not in ("source", "gold", "pred", "expected", "note")}
        print(f"DISAGREE {case['source']} expected={case['expected']} options={options}\n"
              f"  gold: {case['gold'][:160]!r}\n  pred: {case['pred'][-160:]!r}\n"
              f"  microrl: extracted {out['extracted_answer'][:80]!r} "
              f"({out['answer_source']}); {out['reason'][:160]}")
    failures = []
    if agree < 0.98 * len(cases):
        failures.append(f"agreement {agree}/{len(cases)} is below 98%")
    if false_accepts:
        failures.append(f"{len(false_accepts)} false accepts of pairs the suite asserts differ")
    if failures:
        sys.exit("; ".join(failures))


if __name__ == "__main__":
    main()
