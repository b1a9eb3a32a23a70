"""Cost of a view build's join-key step: `.venv/bin/python bench/joinkeys.py [rows ...]`.

For each size (default 10^4, 10^5, 10^6 rows, one distinct key a row, 60 % shared with a
partner dataset of the same size), times in a fresh child process: indexing the keys as the
data streams past (`KeyIndex`: one HMAC per distinct key a batch), and `resolve`, i.e. the DP
distinct count, the overlap with the partner and drawing the view keys; for integer and for
string keys, with a privacy unit other than the key (each unit's first rows only) as well.
Prints seconds and the child's peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, pyarrow as pa
from veil.catalog.joinkeys import JoinKeys, Partner
from veil.catalog.policy import parse_policy
from veil.crypto.pseudonym import CollaborationKey

n, kind, unit = json.loads(sys.argv[1])
key = CollaborationKey.generate()
ids = np.random.default_rng(0).permutation(10 * n)
values = (lambda a: a) if kind == "int" else (lambda a: np.char.add("p-", a.astype(str)))
doc = 'join_keys = ["k"]\n' + ('[privacy_unit]\nid_column = "u"\nmax_contributions = 2\n'
                                if unit else "")
policy = parse_policy(doc, format="toml")

def index(keys):
    joins = JoinKeys(key, policy, rows=10_000, seed=1)
    table = pa.table({"k": values(keys), "u": np.arange(len(keys)) // 2})
    t0 = time.perf_counter()
    for batch in table.to_batches(65_536):
        joins.observe(batch)
    tags = joins.tags("k")
    return joins, tags, time.perf_counter() - t0

partner, tags, _ = index(ids[:n])
partner.resolve()
pool = partner.pools["k"]
mine, _, t_index = index(np.concatenate([ids[: int(0.6 * n)], ids[n: 2 * n - int(0.6 * n)]]))
t0 = time.perf_counter()
mine.resolve({"k": [Partner("p", "x/p", tags, pool.distinct, pool.keys, 1)]})
t_resolve = time.perf_counter() - t0
print(json.dumps({"index_s": t_index, "resolve_s": t_resolve,
                  "matched": mine.pools["k"].matched["x/p"], "keys": len(mine.pools["k"].keys),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000]
    for n in sizes:
        for kind, unit in (("int", False), ("str", False), ("int", True)):
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps([n, kind, unit])],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            print(f"rows={n:>9,} key={kind:<3} unit={'other' if unit else 'key':<5} "
                  f"index={r['index_s']:6.2f}s resolve={r['resolve_s']:5.2f}s "
                  f"view keys={r['keys']:,} matched={r['matched']:,} "
                  f"peak_rss={r['rss_mb']:7.1f}MB")


if __name__ == "__main__":
    main()
