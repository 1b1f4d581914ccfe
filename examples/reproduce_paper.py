"""Reproduce the paper's research questions (Section 4, RQ1-RQ4) on MovieLens-1M.

    python examples/reproduce_paper.py --preset cpu            # reduced model, two CPU cores
    python examples/reproduce_paper.py --preset paper          # the paper's model size, on a GPU
    python examples/reproduce_paper.py --rq 1 --tasks genest   # a subset; finished runs are reused

Writes results/reproduction.md, results/reproduction.json and learning-curve PNGs (see docs/reproduction.md).
Same as `peterrec reproduce`.
"""

from modeling_peterrec.reproduction import main

if __name__ == "__main__":
    main()
