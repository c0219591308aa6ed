"""Write a genotype drawn uniformly from MetaNAS's search space, the control that a searched cell
is compared with (train both as backbone=genotype with the same learner and budget):

    python scripts/random_genotype.py --nodes 3 --seed 0 > random_seed0.json
    metarun algo=reptile backbone=genotype backbone.genotype=random_seed0.json
"""
from __future__ import annotations

import argparse
import json

from metarun.backbones.darts_cells import random_genotype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="intermediate nodes a cell (MetaNAS: 3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(random_genotype(args.nodes, args.seed), indent=1))


if __name__ == "__main__":
    main()
