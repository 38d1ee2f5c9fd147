"""TOC parser benchmark: collector.parse.TocParser against json.loads of the same body (the
cost of merely reading it whole), on the demo's largest table of contents and on the real
fixtures when ../shared is there.

    python bench/toc_parse.py [--articles 100000] [--repeat 5]

Prints, per body: size, in-force entries, best-of-N wall ms of each, and the ratio. The ratio
is what to compare between runs (both sides share the machine's noise).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.demo.corpus import Corpus  # noqa: E402
from collector.parse import parse_toc  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "legifrance-real" / "codes"


def best_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def bodies(articles: int) -> list[tuple[str, str, bytes]]:
    corpus = Corpus(articles)
    largest = max(corpus.code_ids, key=corpus.slot_count)
    found = [(f"demo {articles:,} (largest code)", largest,
              corpus.table_matieres_json(largest, date.today()).encode())]
    if FIXTURES.is_dir():
        found += [(f"real {path.stem}", path.stem, path.read_bytes()) for path in sorted(FIXTURES.glob("*.json"))]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000, help="demo corpus size (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure, best kept (default 5)")
    args = parser.parse_args()
    print("| body | KB | in force | TocParser ms | json.loads ms | ratio | us per in-force entry |")
    print("|------|----|----------|--------------|---------------|-------|-----------------------|")
    for name, code_id, body in bodies(args.articles):
        entries = len(parse_toc(body, code_id).entries)
        ours = best_ms(lambda: parse_toc(body, code_id), args.repeat)
        loads = best_ms(lambda: json.loads(body), args.repeat)
        print(f"| {name} | {len(body) // 1024:,} | {entries:,} | {ours:.1f} | {loads:.1f} | "
              f"{ours / loads:.2f} | {ours * 1000 / max(entries, 1):.1f} |")


if __name__ == "__main__":
    main()
