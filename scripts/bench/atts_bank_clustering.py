"""How a calibration bank's turn-0 scores cluster by question, and what that does to a measured rate.

For each bank (an npz of `save_bank`): the intra-question correlation of "score above the bank's 1 - alpha
quantile", and the spread of the takeover rate of `--test` held-out questions against the rest as the bank
(randomised conformal p-values, `--splits` random question splits), next to the binomial spread over chunks
and the spread with questions as the unit.

    PYTHONPATH=. python scripts/bench/atts_bank_clustering.py BANK.npz [BANK.npz ...] --test 16
"""

import argparse

import numpy as np

from codesign.atts import load_bank


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("banks", nargs="+")
    parser.add_argument("--test", type=int, default=16, help="held-out questions per split")
    parser.add_argument("--splits", type=int, default=400)
    parser.add_argument("--turn", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for path in args.banks:
        x = load_bank(path)[:, :, args.turn]
        x = x[np.isfinite(x).all(1)]
        Q, m = x.shape
        nb = Q - args.test
        for a in (0.25, 0.1):
            ind = (x > np.quantile(x, 1 - a)).astype(float)
            p = ind.mean()
            msb = m * ((ind.mean(1) - p) ** 2).sum() / (Q - 1)
            msw = ((ind - ind.mean(1, keepdims=True)) ** 2).sum() / (Q * (m - 1))
            rho = (msb - msw) / (msb + (m - 1) * msw)
            rates = []
            for _ in range(args.splits):
                perm = rng.permutation(Q)
                bank, s = np.sort(x[perm[args.test:]].ravel()), x[perm[:args.test]].ravel()
                le, lt = np.searchsorted(bank, s, "right"), np.searchsorted(bank, s, "left")
                pv = (bank.size - le + rng.random(s.size) * (1 + le - lt)) / (bank.size + 1)
                rates.append((pv <= a).mean())
            print(f"{path} turn {args.turn} alpha {a}: {Q} questions x {m}, {len(np.unique(x))} distinct scores, "
                  f"intra-question correlation {rho:.2f}; rate {np.mean(rates):.3f}, sd over splits {np.std(rates):.4f} "
                  f"(binomial over chunks {np.sqrt(a * (1 - a) * (1 / (args.test * m) + 1 / (nb * m))):.4f}, "
                  f"questions as the unit {np.sqrt(a * (1 - a) * (1 / args.test + 1 / nb)):.4f})")


if __name__ == "__main__":
    main()
