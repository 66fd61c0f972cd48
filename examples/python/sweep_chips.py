"""Which chip trains Llama 3 70B on 15T tokens cheapest, and how fast? A notebook-style sweep
with rainier.plan: each chip kind at several cluster sizes, its best plan found by the search.

    python examples/python/sweep_chips.py [plot.png]

Prints one line per (chip, size): days to train, total cost, MFU and the plan. With matplotlib
installed and a file name given, also plots cost against time to train.
"""

import sys

import rainier.plan as rp

CHIPS = ["trn2", "trn2u", "trn3", "h100", "b200", "tpu-v6e"]
SIZES = [1024, 4096]
TOKENS = 15e12


def sweep():
    rows = []
    for chip in CHIPS:
        for chips in SIZES:
            try:
                best = rp.search("llama3-70b", chip, chips=chips, seq=8192, global_batch=1024,
                                 tokens=TOKENS)
            except rp.NoPlanError as e:
                print(f"{chip:8} {chips:6}  no plan: {e}")
                continue
            budget = best.economics.budget
            rows.append((chip, chips, budget.time_to_train_days, budget.cost_usd, best.mfu,
                         best.plan))
    return rows


def main(plot_path=None):
    rows = sweep()
    print(f"{'chip':8} {'chips':>6} {'days':>8} {'cost $M':>9} {'MFU':>6}  plan")
    for chip, chips, days, usd, mfu, plan in rows:
        shape = f"tp {plan.tp} pp {plan.pp} cp {plan.cp} dp {plan.dp}"
        print(f"{chip:8} {chips:6} {days:8.1f} {usd / 1e6:9.2f} {mfu:6.1%}  {shape}")
    if plot_path is None:
        return rows
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return rows
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for chip in CHIPS:
        points = [(days, usd / 1e6) for c, _, days, usd, _, _ in rows if c == chip]
        if points:
            ax.plot(*zip(*points), marker="o", label=chip)
    ax.set_xlabel("days to train (15T tokens)")
    ax.set_ylabel("cost ($M, on-demand)")
    ax.set_title("Llama 3 70B: cost vs time to train, best plan per chip and size")
    ax.legend()
    fig.savefig(plot_path, dpi=120, bbox_inches="tight")
    print(f"plot: {plot_path}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
