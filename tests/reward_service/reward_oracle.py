"""Agreement of microrl's reward with math-verify (the pinned PyPI package).

  reward_oracle.py --reward_service BIN --shared DIR [--train 400] [--report FILE]

Builds a corpus from the ground truths in DIR/data (all of MATH-500, AIME 2024/2025,
AMC 2023, and a seeded sample of the MATH train split): each answer rewritten in
equivalent forms that must match (as given, spaced, \\dfrac, exact decimals, leading
zeros, units or text, "x =", reordered sets and lists, \\left/\\right) and perturbed
forms that must not (a changed digit, a flipped sign, a dropped factor, a wrong
interval end). Each form is put in a completion "<think>...</think> ... \\boxed{form}",
scored by `reward_service score` and by math-verify (parse + verify), and compared
with the expected label. Every form appears twice: boxed, and again in one free-text
style with no \\boxed{} ("Answer: $..$", "The final answer is $..$. I hope it is
correct.", the last inline math, a display, a plain-text number, "the answer is .."),
drawn at random (seeded) from the styles that apply. A reordered bare list is labelled not
equivalent (lists are ordered; docs/reward.md). Prints accuracy for both, their
agreement overall and per style, and writes every disagreement to --report. Fails if
microrl accepts a perturbed answer that math-verify rejects, if microrl's accuracy on
either kind falls below 97%, or if microrl is right less often than math-verify on
either kind.
"""
import argparse
import atexit
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction


def load_answers(shared, train_sample, seed):
    answers = []
    for name in ("math500", "aime24", "aime25", "amc23"):
        with open(os.path.join(shared, "data", f"{name}.jsonl"), encoding="utf-8") as f:
            answers += [(f"{name}:{json.loads(l)['id']}", json.loads(l)["answer"]) for l in f]
    with open(os.path.join(shared, "data", "math_train.jsonl"), encoding="utf-8") as f:
        train = [(f"train:{json.loads(l)['id']}", json.loads(l)["answer"]) for l in f]
    answers += random.Random(seed).sample(train, min(train_sample, len(train)))
    return answers


def top_level_commas(s):
    depth, parts, start = 0, [], 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def exact_decimal(s):
    m = re.fullmatch(r"\s*(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}\s*", s)
    value = None
    if m:
        value = Fraction(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1)
    elif re.fullmatch(r"-?\d+/\d+", s.strip()):
        value = Fraction(s.strip())
    if value is None or value.denominator == 1:
        return None
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d != 1:
        return None
    text = f"{float(value):.12f}".rstrip("0")
    return text if Fraction(text) == value else None


def equivalent_forms(answer):
    a = answer.strip()
    forms = [("as given", a)]
    spaced = re.sub(r"\s*(?<!\\)([+\-=,])\s*", r" \1 ", a).strip()
    if spaced != a:
        forms.append(("spaced", spaced))
    if "\\frac" in a and "\\dfrac" not in a:
        forms.append(("dfrac", a.replace("\\frac", "\\dfrac")))
    decimal = exact_decimal(a)
    if decimal:
        forms.append(("exact decimal", decimal))
    if re.fullmatch(r"\d+", a):
        forms.append(("leading zero", "0" + a))
        forms.append(("units", a + "\\text{ units}"))
        forms.append(("assignment", "x = " + a))
    elif re.fullmatch(r"-?\d+(\.\d+)?", a):
        forms.append(("assignment", "x = " + a))
    parts = top_level_commas(a)
    thousands = re.fullmatch(r"\\?\$?\d{1,3}(,(\\!)?\s*\d{3})+", a.replace(" ", ""))
    if len(parts) > 1 and not thousands and not a.startswith(("(", "[", "\\left", "\\begin")):
        forms.append(("reordered list", ", ".join(p.strip() for p in reversed(parts))))
    m = re.fullmatch(r"\\\{(.*)\\\}", a)
    if m and len(top_level_commas(m.group(1))) > 1:
        inner = ", ".join(p.strip() for p in reversed(top_level_commas(m.group(1))))
        forms.append(("reordered set", "\\{" + inner + "\\}"))
    if a.startswith("(") and a.endswith(")") and "\\left" not in a:
        forms.append(("left/right", "\\left" + a[:-1] + "\\right)"))
    return forms


def perturbed_forms(answer):
    a = answer.strip()
    forms = []
    # The value's digits, not a unit's (the 2 of "15\\mbox{ cm}^2" is not the answer's).
    unit = re.search(r"\\(?:text|mbox|mathrm)\{[^{}]*\}(\^\{?\d\}?)?\s*$", a)
    value_end = unit.start() if unit else len(a)
    digits = [i for i, c in enumerate(a[:value_end]) if c.isdigit()]
    if digits:
        i = digits[-1]
        forms.append(("changed digit", a[:i] + str((int(a[i]) + 1) % 10) + a[i + 1:]))
    if re.fullmatch(r"-?\d+(\.\d+)?|-?\\[dt]?frac\{\d+\}\{\d+\}", a) and a.strip("-0.") != "":
        forms.append(("flipped sign", a[1:] if a.startswith("-") else "-" + a))
    if "\\pi" in a and a.strip() != "\\pi":
        forms.append(("dropped factor", a.replace("\\pi", "", 1)))
    elif re.search(r"\\sqrt\{", a):
        forms.append(("dropped factor", re.sub(r"\\sqrt\{([^{}]*)\}", r"\1", a, count=1)))
    m = re.fullmatch(r"([\(\[])(.*)([\)\]])", a)
    if m and len(top_level_commas(m.group(2))) == 2 and ("[" in (m.group(1) + m.group(3))):
        flipped_end = {")": "]", "]": ")"}[m.group(3)]
        forms.append(("wrong interval end", m.group(1) + m.group(2) + flipped_end))
    return forms


THINK = "<think>\nLet me work through this carefully.\n</think>\n\n"


def is_plain_number(form):
    return re.fullmatch(r"-?\d+(\.\d+)?", form.strip()) is not None


# Free-text answer styles (no \boxed{}), as models write them.
STYLES = {
    "answer colon": lambda f: f"We simplify each part in turn.\n\nAnswer: ${f}$",
    "final answer": lambda f: f"Combining the cases gives the result.\n\n"
                              f"Final Answer: The final answer is ${f}$. I hope it is correct.",
    "last inline": lambda f: f"We simplify step by step. Therefore, the result is ${f}$.",
    "display": lambda f: f"Putting it all together,\n\\[\n{f}\n\\]",
    "plain number": lambda f: f"Adding everything up, the total comes to {f}.",
    "answer is": lambda f: f"After checking the arithmetic, the answer is {f}.",
}


def styles_for(form):
    names = ["answer colon", "final answer", "last inline", "display"]
    if is_plain_number(form):
        names += ["plain number", "answer is"]
    return names


def completion(form, style="boxed"):
    if style == "boxed":
        return THINK + f"The final result is $\\boxed{{{form}}}$."
    return THINK + STYLES[style](form)


def build_cases(shared, train, seed):
    """The corpus: every form boxed and again in a free-text style, with its label."""
    cases = []
    style_rng = random.Random(seed)
    for answer_id, answer in load_answers(shared, train, seed):
        labelled = [(kind, form, True) for kind, form in equivalent_forms(answer)]
        labelled += [(kind, form, False) for kind, form in perturbed_forms(answer)
                     if form.strip() != answer.strip()]
        for kind, form, expect in labelled:
            # A bare list is ordered (docs/reward.md): reordering it changes the answer.
            if kind == "reordered list":
                expect = False
            cases.append({"id": answer_id, "kind": kind, "expect": expect, "gold": answer,
                          "form": form, "style": "boxed"})
            # The same form again in a free-text style (drawn from those that apply).
            style = style_rng.choice(styles_for(form))
            cases.append({"id": answer_id, "kind": kind, "expect": expect, "gold": answer,
                          "form": form, "style": style})
    return cases


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reward_service", required=True)
    parser.add_argument("--shared", required=True)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--report", default="")
    args = parser.parse_args()

    from math_verify import parse, verify

    cases = build_cases(args.shared, args.train, args.seed)

    work = tempfile.mkdtemp(prefix="reward_oracle.")
    atexit.register(shutil.rmtree, work, True)
    with open(os.path.join(work, "in.jsonl"), "w", encoding="utf-8") as f:
        for i, case in enumerate(cases):
            f.write(json.dumps({"id": str(i), "completion": completion(case["form"], case["style"]),
                                "ground_truth": case["gold"]}) + "\n")
    start = time.perf_counter()
    subprocess.run([args.reward_service, "score", f"--in={work}/in.jsonl",
                    f"--out={work}/out.jsonl", "--threads=1"], check=True)
    ours_seconds = time.perf_counter() - start
    with open(os.path.join(work, "out.jsonl"), encoding="utf-8") as f:
        ours = [json.loads(line) for line in f]

    start = time.perf_counter()
    theirs = []
    for case in cases:
        try:
            gold = parse("\\boxed{" + case["gold"] + "}")
            pred = parse(completion(case["form"], case["style"]))
            theirs.append(bool(verify(gold, pred)))
        except Exception:
            theirs.append(False)
    theirs_seconds = time.perf_counter() - start

    def accuracy(results, expect):
        picked = [(r, c) for r, c in zip(results, cases) if c["expect"] == expect]
        return sum(r == expect for r, _ in picked), len(picked)

    ours_ok = [o["correct"] for o in ours]
    report = []
    for label, results in (("microrl", ours_ok), ("math-verify", theirs)):
        matched, n_match = accuracy(results, True)
        rejected, n_reject = accuracy(results, False)
        print(f"{label:12s} equivalent forms accepted {matched}/{n_match} "
              f"({100 * matched / n_match:.1f}%), perturbed forms rejected "
              f"{rejected}/{n_reject} ({100 * rejected / n_reject:.1f}%)")
    agree = sum(a == b for a, b in zip(ours_ok, theirs))
    print(f"agreement with math-verify: {agree}/{len(cases)} ({100 * agree / len(cases):.2f}%) "
          f"on {len(cases)} completions from {len(set(c['id'] for c in cases))} answers")
    for style in ["boxed"] + list(STYLES):
        picked = [(o, t) for o, t, c in zip(ours_ok, theirs, cases) if c["style"] == style]
        if picked:
            same = sum(o == t for o, t in picked)
            print(f"  {style:13s} agreement {same}/{len(picked)} ({100 * same / len(picked):.2f}%)")
    print(f"time: microrl {ours_seconds:.2f} s (one thread, incl. process start), "
          f"math-verify {theirs_seconds:.2f} s")
    bad_accepts = []
    for case, o, t in zip(cases, ours, theirs):
        if o["correct"] != t or o["correct"] != case["expect"]:
            report.append({"id": case["id"], "kind": case["kind"], "style": case["style"],
                           "expect": case["expect"],
                           "microrl": o["correct"], "math_verify": t, "gold": case["gold"],
                           "form": case["form"], "microrl_reason": o["reason"]})
        if o["correct"] and not case["expect"] and not t:
            bad_accepts.append(case)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            for r in report:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{len(report)} cases where microrl, math-verify and the label are not all equal: "
              f"{args.report}")
    failures = []
    if bad_accepts:
        failures.append(f"{len(bad_accepts)} perturbed answers accepted by microrl but not "
                        f"math-verify, e.g. {bad_accepts[0]}")
    for expect in (True, False):
        matched, n = accuracy(ours_ok, expect)
        if matched < 0.97 * n:
            failures.append(f"microrl accuracy on {'equivalent' if expect else 'perturbed'} "
                            f"forms is {matched}/{n}, below 97%")
    # Where the two disagree, the label decides who is right: microrl must be right at
    # least as often as math-verify on each kind.
    for expect in (True, False):
        ours_right, n = accuracy(ours_ok, expect)
        theirs_right, _ = accuracy(theirs, expect)
        if ours_right < theirs_right:
            failures.append(f"microrl is right on {ours_right}/{n} "
                            f"{'equivalent' if expect else 'perturbed'} forms, "
                            f"math-verify on {theirs_right}")
    if failures:
        sys.exit("\n".join(failures))


if __name__ == "__main__":
    main()
