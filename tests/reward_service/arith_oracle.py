"""Exact arithmetic of microrl's reward against Python's fractions (an independent oracle).

  arith_oracle.py --reward_service BIN [--cases 3000] [--seed 7]

(--cases sets the verdicts, about three per expression: 9,001 verdicts on 2,818
expressions with the defaults.)

Draws random integer/rational expressions (sums, differences, products, quotients,
integer powers up to big exponents, factorials, binomials, gcd/lcm, decimals, literals
of up to 60 digits), computes each value with fractions.Fraction, and scores, with
`reward_service score --mode answer`, the expression against its value (must be
correct), against the value plus one and the value doubled (must be wrong), and against
the value as written after 128-bit wrap-around (must be wrong). Values are kept under
4,000 bits, well inside the reward's exact range. Fails on any wrong verdict.
"""
import argparse
import atexit
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from fractions import Fraction


class Gen:
    def __init__(self, rng):
        self.r = rng

    def leaf(self):
        k = self.r.randrange(6)
        if k == 0:
            digits = str(self.r.randrange(1, 10)) + "".join(
                str(self.r.randrange(10)) for _ in range(self.r.randrange(60)))
            return digits, Fraction(int(digits))
        if k == 1:
            whole, frac = self.r.randrange(100), self.r.randrange(1, 1000)
            text = f"{whole}.{frac:03d}"
            return text, Fraction(text)
        if k == 2:
            n = self.r.randrange(1, 40)
            return f"(-{n})", Fraction(-n)
        n = self.r.randrange(25)
        return str(n), Fraction(n)

    def expr(self, depth):
        if depth == 0:
            return self.leaf()
        op = self.r.randrange(10)
        a, va = self.expr(depth - 1)
        if op == 0:  # power, exponents up to 300 on small bases
            k = self.r.randrange(-6, 300 if abs(va) < 10 else 8)
            bits = max(abs(va.numerator), va.denominator).bit_length() * abs(k)
            if (va == 0 and k < 0) or bits > 3000:
                return a, va
            return f"({a})^{{{k}}}", va ** k
        if op == 1:
            n = self.r.randrange(40)
            return f"{n}!", Fraction(math.factorial(n))
        if op == 2:
            n, k = self.r.randrange(100), self.r.randrange(100)
            return f"\\binom{{{n}}}{{{k}}}", Fraction(math.comb(n, k) if k <= n else 0)
        b, vb = self.expr(depth - 1)
        if op in (3, 4):
            return f"{a} + ({b})", va + vb
        if op == 5:
            return f"{a} - ({b})", va - vb
        if op == 6:
            sign = self.r.choice([" \\cdot ", " \\times ", " * "])
            return f"({a}){sign}({b})", va * vb
        if op == 7 and vb != 0:
            return f"\\dfrac{{{a}}}{{{b}}}", va / vb
        if op == 8 and va.denominator == 1 and vb.denominator == 1:
            if self.r.randrange(2):
                return f"\\gcd({a}, {b})", Fraction(math.gcd(int(va), int(vb)))
            return f"\\operatorname{{lcm}}({a}, {b})", Fraction(abs(math.lcm(int(va), int(vb))))
        return f"({a})({b})", va * vb


def render(v):
    if v.denominator == 1:
        return str(v.numerator)
    sign = "-" if v < 0 else ""
    return f"{sign}\\frac{{{abs(v.numerator)}}}{{{v.denominator}}}"


def wrapped(v):
    """The value as 128-bit two's-complement arithmetic would leave it."""
    def wrap(n):
        n %= 1 << 128
        return n - (1 << 128) if n >= 1 << 127 else n
    num, den = wrap(v.numerator), wrap(v.denominator)
    return Fraction(num, den) if den != 0 else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reward_service", required=True)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    gen = Gen(random.Random(args.seed))
    items = []
    while len(items) < args.cases * 3:
        text, value = gen.expr(gen.r.randrange(1, 6))
        if max(abs(value.numerator), value.denominator).bit_length() > 4000:
            continue
        items.append((text, render(value), True, "value"))
        items.append((text, render(value + 1), False, "value + 1"))
        if value != 0:
            items.append((text, render(value * 2), False, "value * 2"))
        w = wrapped(value)
        if w is not None and w != value:
            items.append((text, render(w), False, "128-bit wrap"))
    work = tempfile.mkdtemp(prefix="arith_oracle.")
    atexit.register(shutil.rmtree, work, True)
    with open(os.path.join(work, "in.jsonl"), "w") as f:
        for i, (text, gold, _, _) in enumerate(items):
            f.write(json.dumps({"id": str(i), "answer": text, "ground_truth": gold}) + "\n")
    subprocess.run([args.reward_service, "score", "--mode=answer", f"--in={work}/in.jsonl",
                    f"--out={work}/out.jsonl", "--threads=0"], check=True)
    with open(os.path.join(work, "out.jsonl")) as f:
        out = [json.loads(line) for line in f]
    wrong = [(item, o) for item, o in zip(items, out) if o["correct"] != item[2]]
    kinds = {}
    for item in items:
        kinds[item[3]] = kinds.get(item[3], 0) + 1
    print(f"{len(items) - len(wrong)}/{len(items)} verdicts right "
          f"({', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))})")
    for (text, gold, expect, kind), o in wrong[:20]:
        print(f"WRONG ({kind}, expected {expect}): {text}  vs  {gold[:120]}  reason: {o['reason']}")
    if wrong:
        sys.exit(f"{len(wrong)} wrong verdicts")


if __name__ == "__main__":
    main()
